package authz

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	fositejwt "github.com/ory/fosite/token/jwt"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/seal"
	"github.com/stepup-dev/stepup/tokens"
)

// keyManager holds the JWT signing keys: a sealedKeys record, and the
// signers built for the current key set.
type keyManager struct {
	sealedKeys[tokens.KeySet, *tokens.KeySet]
	algs []string

	mu      sync.Mutex
	signed  *tokens.KeySet // the set signers were built for
	signers map[string]*tokens.Signer

	// verified remembers tokens whose signature verified, for
	// verifiedFor: a client sends one access token with each of its calls,
	// and a resource server introspects it each time. Only the signature
	// is remembered; every caller still checks the claims (exp first) and
	// the store (revocation) each time. Keys leave the set only after
	// their retention, long past a minute.
	verified tokens.Recent[verifiedToken]
}

type verifiedToken struct {
	payload []byte
	typ     string
}

// verifiedFor is how long a verified signature is remembered.
const verifiedFor = time.Minute

func newKeyManager(kv storage.KV, box *seal.Box, algs []string, rotateEvery, retain time.Duration, now func() time.Time) *keyManager {
	return &keyManager{
		algs:     algs,
		verified: tokens.Recent[verifiedToken]{Size: 10000},
		sealedKeys: sealedKeys[tokens.KeySet, *tokens.KeySet]{
			kv: kv, box: box, name: "signing", now: now,
			create: func(now time.Time) (*tokens.KeySet, error) { return tokens.NewKeySet(algs, now, rotateEvery) },
			rotate: func(s *tokens.KeySet, now time.Time) error { return s.Rotate(now, rotateEvery, retain) },
			// The operator changed the algorithms: start a new set.
			stale: func(s *tokens.KeySet) bool { return strings.Join(s.Algorithms(), ",") != strings.Join(algs, ",") },
		},
	}
}

// Rotate rotates now, whatever the schedule (the admin command).
func (m *keyManager) Rotate(ctx context.Context) error { return m.rotateNow(ctx) }

func (m *keyManager) Signer(ctx context.Context, alg string) (*tokens.Signer, error) {
	set, err := m.current(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.signed != set {
		// Building a signer prepares its key; do it once per key set.
		signers := map[string]*tokens.Signer{}
		for _, a := range set.Algorithms() {
			if signers[a], err = set.Signer(a); err != nil {
				return nil, err
			}
		}
		m.signed, m.signers = set, signers
	}
	s, ok := m.signers[alg]
	if !ok {
		return nil, fmt.Errorf("no signing key for algorithm %s", alg)
	}
	return s, nil
}

func (m *keyManager) JWKS(ctx context.Context) (jose.JSONWebKeySet, error) {
	set, err := m.current(ctx)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	return set.PublicJWKS(m.now()), nil
}

// Verify checks a token signed by any of our keys. A kid we do not know may
// come from a rotation on another replica, so it triggers one reload,
// rate-limited because anyone can send such a token.
func (m *keyManager) Verify(ctx context.Context, token string) ([]byte, string, error) {
	now := m.now()
	sum := sha256.Sum256([]byte(token))
	if v, ok := m.verified.Get(sum, now); ok {
		return bytes.Clone(v.payload), v.typ, nil
	}
	set, err := m.current(ctx)
	if err != nil {
		return nil, "", err
	}
	payload, typ, err := set.Verify(token, now)
	if errors.Is(err, tokens.UnknownKey) {
		if set, err = m.reloadIfAllowed(ctx); err != nil {
			return nil, "", err
		}
		payload, typ, err = set.Verify(token, now)
	}
	if err != nil {
		return nil, "", err
	}
	m.verified.Put(sum, verifiedToken{payload: bytes.Clone(payload), typ: typ}, now.Add(verifiedFor), now)
	return payload, typ, nil
}

func (m *keyManager) publicKey(ctx context.Context, kid string) (any, error) {
	set, err := m.current(ctx)
	if err != nil {
		return nil, err
	}
	k, ok := set.VerificationKey(kid, m.now())
	if !ok {
		return nil, tokens.UnknownKey
	}
	return k.Key, nil
}

// idTokenSigner is fosite's signer for ID tokens. It signs with the
// algorithm the audience client registered (id_token_signed_response_alg),
// RS256 by default as OpenID Connect requires.
type idTokenSigner struct {
	keys    *keyManager
	clients *clientDirectory
}

var _ fositejwt.Signer = idTokenSigner{}

func (s idTokenSigner) Generate(ctx context.Context, claims fositejwt.MapClaims, _ fositejwt.Mapper) (string, string, error) {
	alg := tokens.RS256
	if aud, ok := claims["aud"].([]string); ok && len(aud) > 0 {
		if c, ok := s.clients.config(aud[0]); ok && c.IDTokenAlg != "" {
			alg = c.IDTokenAlg
		}
	}
	signer, err := s.keys.Signer(ctx, alg)
	if err != nil {
		return "", "", err
	}
	token, err := signer.SignJSON(claims, tokens.TypIDToken)
	if err != nil {
		return "", "", err
	}
	_, sig, _ := cutLast(token)
	return token, sig, nil
}

func cutLast(token string) (string, string, bool) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return token, "", false
	}
	return token[:i], token[i+1:], true
}

func (s idTokenSigner) Validate(ctx context.Context, token string) (string, error) {
	if _, _, err := s.keys.Verify(ctx, token); err != nil {
		return "", err
	}
	_, sig, _ := cutLast(token)
	return sig, nil
}

// Decode parses an id_token_hint. fosite's parser reports expiry as a
// validation error it tolerates, as OpenID Connect allows expired hints.
func (s idTokenSigner) Decode(ctx context.Context, token string) (*fositejwt.Token, error) {
	return fositejwt.Parse(token, func(t *fositejwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return s.keys.publicKey(ctx, kid)
	})
}

func (s idTokenSigner) GetSignature(_ context.Context, token string) (string, error) {
	_, sig, ok := cutLast(token)
	if !ok {
		return "", errors.New("malformed token")
	}
	return sig, nil
}

func (s idTokenSigner) Hash(_ context.Context, in []byte) ([]byte, error) {
	sum := sha256.Sum256(in)
	return sum[:], nil
}

func (s idTokenSigner) GetSigningMethodLength(context.Context) int { return sha256.Size }

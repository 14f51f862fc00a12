package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
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

// keyManager keeps the signing keys in the store, sealed with the operator's
// secret, so that every replica signs with the same keys and sees the same
// rotations. Reads are served from a cache that lasts until the next
// rotation or a short refresh interval, whichever is first.
type keyManager struct {
	kv          storage.KV
	box         *seal.Box
	algs        []string
	rotateEvery time.Duration
	// retain is how long a retired key stays published: the longest
	// lifetime of anything it signed.
	retain time.Duration
	now    func() time.Time

	mu          sync.Mutex
	set         *tokens.KeySet
	signers     map[string]*tokens.Signer
	freshUntil  time.Time
	lastRefresh time.Time
}

const (
	keysNS  = "keys"
	keysKey = "signing"
	// keysRefresh bounds how long another replica's rotation stays unseen.
	keysRefresh = time.Minute
	// unknownKidBackoff rate-limits reloads caused by tokens with a kid we
	// do not know, which anyone can send.
	unknownKidBackoff = 5 * time.Second
)

var keysAAD = []byte("stepup signing keys v1")

func (m *keyManager) current(ctx context.Context) (*tokens.KeySet, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.set != nil && m.now().Before(m.freshUntil) {
		return m.set, nil
	}
	return m.reloadLocked(ctx)
}

// reloadLocked reads the record, creating or rotating it where due. Only
// creation and rotation write, inside Update, so replicas racing to rotate
// agree on one result.
func (m *keyManager) reloadLocked(ctx context.Context) (*tokens.KeySet, error) {
	now := m.now()
	m.lastRefresh = now
	set, err := m.read(ctx)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if set == nil || set.RotationDue(now) || !sameAlgs(set.Algorithms(), m.algs) {
		set = nil
		err = m.kv.Update(ctx, keysNS, keysKey, 0, func(old []byte) ([]byte, error) {
			s, err := m.open(old)
			if err != nil {
				return nil, err
			}
			switch {
			case s == nil || !sameAlgs(s.Algorithms(), m.algs):
				// First start, or the operator changed algorithms.
				if s, err = tokens.NewKeySet(m.algs, now, m.rotateEvery); err != nil {
					return nil, err
				}
			case s.RotationDue(now):
				if err := s.Rotate(now, m.rotateEvery, m.retain); err != nil {
					return nil, err
				}
			}
			set = s
			return m.seal(s)
		})
		if err != nil {
			return nil, err
		}
	}
	signers := map[string]*tokens.Signer{}
	for _, alg := range set.Algorithms() {
		if signers[alg], err = set.Signer(alg); err != nil {
			return nil, err
		}
	}
	m.set, m.signers = set, signers
	m.freshUntil = now.Add(keysRefresh)
	if set.NextRotation.Before(m.freshUntil) {
		m.freshUntil = set.NextRotation
	}
	return set, nil
}

func sameAlgs(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

func (m *keyManager) read(ctx context.Context) (*tokens.KeySet, error) {
	data, err := m.kv.Get(ctx, keysNS, keysKey)
	if err != nil {
		return nil, err
	}
	return m.open(data)
}

func (m *keyManager) open(data []byte) (*tokens.KeySet, error) {
	if data == nil {
		return nil, nil
	}
	plain, err := m.box.Open(data, keysAAD)
	if err != nil {
		return nil, fmt.Errorf("the stored signing keys cannot be decrypted: is this the secret they were sealed with? %w", err)
	}
	var s tokens.KeySet
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("decoding the stored signing keys: %w", err)
	}
	return &s, nil
}

func (m *keyManager) seal(s *tokens.KeySet) ([]byte, error) {
	plain, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return m.box.Seal(plain, keysAAD), nil
}

// Rotate rotates now, whatever the schedule (the admin command).
func (m *keyManager) Rotate(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.kv.Update(ctx, keysNS, keysKey, 0, func(old []byte) ([]byte, error) {
		s, err := m.open(old)
		if err != nil || s == nil {
			return nil, errors.Join(err, errors.New("no signing keys to rotate yet"))
		}
		if err := s.Rotate(m.now(), m.rotateEvery, m.retain); err != nil {
			return nil, err
		}
		return m.seal(s)
	})
	if err != nil {
		return err
	}
	m.freshUntil = time.Time{}
	_, err = m.reloadLocked(ctx)
	return err
}

func (m *keyManager) Signer(ctx context.Context, alg string) (*tokens.Signer, error) {
	if _, err := m.current(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
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
	set, err := m.current(ctx)
	if err != nil {
		return nil, "", err
	}
	payload, typ, err := set.Verify(token, m.now())
	if !errors.Is(err, tokens.ErrUnknownKey) {
		return payload, typ, err
	}
	m.mu.Lock()
	if m.now().Sub(m.lastRefresh) >= unknownKidBackoff {
		set, err = m.reloadLocked(ctx)
	}
	m.mu.Unlock()
	if err != nil {
		return nil, "", err
	}
	return set.Verify(token, m.now())
}

func (m *keyManager) publicKey(ctx context.Context, kid string) (any, error) {
	set, err := m.current(ctx)
	if err != nil {
		return nil, err
	}
	k, ok := set.VerificationKey(kid, m.now())
	if !ok {
		return nil, tokens.ErrUnknownKey
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

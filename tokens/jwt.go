package tokens

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Header typ values.
const (
	TypAccessToken = "at+jwt" // RFC 9068 section 2.1
	TypIDToken     = "JWT"
)

// Reasons Verify fails, for errors.Is. Callers map them to their own
// answers (invalid_token, a log line) without reading strings.
var (
	// ErrMalformed: not a compact JWS, or a header that cannot be read.
	ErrMalformed = errors.New("tokens: malformed token")
	// ErrUnknownKey: no kid, or a kid that is not current and not retired
	// but unexpired. A token signed before its key's retention ran out
	// ends up here too.
	ErrUnknownKey = errors.New("tokens: unknown signing key")
	// ErrBadSignature: the header alg is not the key's, or the signature
	// does not verify.
	ErrBadSignature = errors.New("tokens: bad signature")
)

// Signer signs with one key of a KeySet. It is safe for concurrent use.
//
// go-jose's jwt builder marshals the claims twice (once to check them,
// once to sign); Signer signs the caller's bytes as they are, so the
// claims are marshalled once.
type Signer struct {
	kid string
	alg string
	key any

	// go-jose fixes the protected header when a signer is built, so there
	// is one signer per typ. Callers use two or three typ values, all
	// built up front; others are built on first use.
	byTyp sync.Map // string → jose.Signer
}

func newSigner(k jose.JSONWebKey) (*Signer, error) {
	if k.KeyID == "" {
		return nil, fmt.Errorf("tokens: %s signing key has no kid", k.Algorithm)
	}
	if k.IsPublic() || !keyFits(k.Algorithm, k.Key) {
		return nil, fmt.Errorf("tokens: key %q is not a private key for %s", k.KeyID, k.Algorithm)
	}
	key := k.Key
	if rk, ok := key.(*rsa.PrivateKey); ok {
		// A key decoded from JSON has its CRT values but not the prepared
		// form crypto/rsa signs with, which it would otherwise rebuild on
		// every signature. The copy keeps this reader from writing to the
		// caller's KeySet.
		c := *rk
		c.Precompute()
		key = &c
	}
	s := &Signer{kid: k.KeyID, alg: k.Algorithm, key: key}
	for _, typ := range []string{"", TypAccessToken, TypIDToken} {
		if _, err := s.joseSigner(typ); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// KeyID is the kid the signer puts in every header.
func (s *Signer) KeyID() string { return s.kid }

// Algorithm is the signer's JWS alg.
func (s *Signer) Algorithm() string { return s.alg }

// Sign signs payload as a compact JWS with the protected header
// {"alg","kid","typ"}; typ is left out when empty. Access tokens use
// TypAccessToken, ID tokens TypIDToken.
func (s *Signer) Sign(payload []byte, typ string) (string, error) {
	js, err := s.joseSigner(typ)
	if err != nil {
		return "", err
	}
	obj, err := js.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("tokens: sign with %s key %q: %w", s.alg, s.kid, err)
	}
	return obj.CompactSerialize()
}

// SignJSON marshals v once with encoding/json and signs the result.
func (s *Signer) SignJSON(v any, typ string) (string, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("tokens: marshal claims: %w", err)
	}
	return s.Sign(payload, typ)
}

func (s *Signer) joseSigner(typ string) (jose.Signer, error) {
	if js, ok := s.byTyp.Load(typ); ok {
		return js.(jose.Signer), nil
	}
	// The kid goes in as a plain header, not through a JSONWebKey signing
	// key, so that the header carries exactly alg, kid and typ.
	opts := (&jose.SignerOptions{}).WithHeader("kid", s.kid)
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(s.alg), Key: s.key}, opts)
	if err != nil {
		return nil, fmt.Errorf("tokens: signer for %s key %q: %w", s.alg, s.kid, err)
	}
	actual, _ := s.byTyp.LoadOrStore(typ, js)
	return actual.(jose.Signer), nil
}

// Verify checks a compact JWS against the keys that verify at now: the
// header must name one of them by kid, and its alg must be that key's alg
// ("none" and algorithms outside the set never are). It returns the
// payload and the header typ ("" when absent).
//
// Verify checks the signature only; expiry, audience and the other claims
// are the caller's to check on the returned payload.
func (ks *KeySet) Verify(token string, now time.Time) (payload []byte, typ string, err error) {
	var algs []jose.SignatureAlgorithm
	ks.eachVerificationKey(now, func(k jose.JSONWebKey) bool {
		if a := jose.SignatureAlgorithm(k.Algorithm); !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
		return true
	})
	return verifyCompact(token, algs, func(kid string) (jose.JSONWebKey, bool) {
		return ks.VerificationKey(kid, now)
	})
}

// verifyCompact is Verify over any source of keys, so that a verifier
// working from a fetched JWKS can apply the same rules.
func verifyCompact(token string, algs []jose.SignatureAlgorithm, lookup func(kid string) (jose.JSONWebKey, bool)) ([]byte, string, error) {
	if len(algs) == 0 {
		return nil, "", fmt.Errorf("%w: no verification keys", ErrUnknownKey)
	}
	obj, err := jose.ParseSignedCompact(token, algs)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, "", fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(obj.Signatures) != 1 {
		return nil, "", fmt.Errorf("%w: want exactly one signature", ErrMalformed)
	}
	h := obj.Signatures[0].Header
	typ := ""
	if v, present := h.ExtraHeaders[jose.HeaderType]; present {
		s, ok := v.(string)
		if !ok {
			return nil, "", fmt.Errorf("%w: typ header is not a string", ErrMalformed)
		}
		typ = s
	}
	if h.KeyID == "" {
		return nil, "", fmt.Errorf("%w: no kid in header", ErrUnknownKey)
	}
	key, ok := lookup(h.KeyID)
	if !ok {
		return nil, "", fmt.Errorf("%w: kid %q", ErrUnknownKey, h.KeyID)
	}
	// The parser only knows the alg is one of ours; it must also be the
	// one this key was made for, or a token could be checked under a
	// scheme its key was never meant for.
	if h.Algorithm != key.Algorithm || !keyFits(key.Algorithm, key.Key) {
		return nil, "", fmt.Errorf("%w: header alg %q, key %q is %s", ErrBadSignature, h.Algorithm, h.KeyID, key.Algorithm)
	}
	payload, err := obj.Verify(key.Key)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return payload, typ, nil
}

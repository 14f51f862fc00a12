package tokens

import (
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Header typ values.
const (
	TypAccessToken = "at+jwt" // RFC 9068 section 2.1
	TypIDToken     = "JWT"
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
// payload and the header typ ("" when absent). Failures are *Error.
//
// Verify checks the signature only; CheckAccess, or the caller, checks the
// claims.
func (ks *KeySet) Verify(token string, now time.Time) (payload []byte, typ string, err error) {
	jws, err := ParseJWS(token)
	if err != nil {
		return nil, "", err
	}
	key, ok := ks.VerificationKey(jws.KeyID, now)
	if !ok {
		return nil, "", fail(UnknownKey, "kid %q", jws.KeyID)
	}
	payload, err = jws.Verify(key)
	return payload, jws.Type, err
}

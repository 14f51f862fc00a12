package tokens

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
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

var b64 = base64.RawURLEncoding

// Signer signs with one key of a KeySet. It is safe for concurrent use.
//
// It writes the compact JWS itself, and go-jose reads every token (package
// verify, KeySet.Verify, the tests). Every token a key signs with one typ
// has the same protected header, yet go-jose's signer marshals that header
// through reflection again for each token, and builds a JSONWebSignature
// to serialize it: a fifth of a signature's time and 40% of its garbage,
// on the hottest path of the token endpoint. Here the header is encoded
// once per typ, and a token is one buffer, one hash and one signature by
// the standard library. The claims are the caller's bytes as they are, so
// SignJSON marshals them once.
type Signer struct {
	kid string
	alg string
	key crypto.Signer

	headers sync.Map // typ → base64url protected header
}

func newSigner(k jose.JSONWebKey) (*Signer, error) {
	if k.KeyID == "" {
		return nil, fmt.Errorf("tokens: %s signing key has no kid", k.Algorithm)
	}
	if k.IsPublic() || !keyFits(k.Algorithm, k.Key) {
		return nil, fmt.Errorf("tokens: key %q is not a private key for %s", k.KeyID, k.Algorithm)
	}
	key, ok := k.Key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tokens: key %q of type %T cannot sign", k.KeyID, k.Key)
	}
	if rk, ok := key.(*rsa.PrivateKey); ok {
		// A key decoded from JSON has its CRT values but not the prepared
		// form crypto/rsa signs with, which it would otherwise rebuild on
		// every signature. The copy keeps this reader from writing to the
		// caller's KeySet.
		c := *rk
		c.Precompute()
		key = &c
	}
	return &Signer{kid: k.KeyID, alg: k.Algorithm, key: key}, nil
}

// KeyID is the kid the signer puts in every header.
func (s *Signer) KeyID() string { return s.kid }

// Algorithm is the signer's JWS alg.
func (s *Signer) Algorithm() string { return s.alg }

// Sign signs payload as a compact JWS with the protected header
// {"alg","kid","typ"}; typ is left out when empty. Access tokens use
// TypAccessToken, ID tokens TypIDToken.
func (s *Signer) Sign(payload []byte, typ string) (string, error) {
	h := s.header(typ)
	// header.payload.signature in one allocation: an ES256 signature is
	// 64 bytes, 86 in base64url; larger ones grow the buffer once.
	tok := make([]byte, 0, len(h)+1+b64.EncodedLen(len(payload))+1+86)
	tok = append(tok, h...)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, payload)
	sig, err := s.signature(tok)
	if err != nil {
		return "", fmt.Errorf("tokens: sign with %s key %q: %w", s.alg, s.kid, err)
	}
	tok = append(tok, '.')
	return string(b64.AppendEncode(tok, sig)), nil
}

// signature is the JWS signature (RFC 7518 section 3) of the signing input.
func (s *Signer) signature(input []byte) ([]byte, error) {
	switch s.alg {
	case ES256:
		digest := sha256.Sum256(input)
		r, ss, err := ecdsa.Sign(rand.Reader, s.key.(*ecdsa.PrivateKey), digest[:])
		if err != nil {
			return nil, err
		}
		// R and S, each as 32 big-endian bytes: not ASN.1.
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		ss.FillBytes(sig[32:])
		return sig, nil
	case RS256:
		digest := sha256.Sum256(input)
		return s.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	case EdDSA:
		return s.key.Sign(rand.Reader, input, crypto.Hash(0))
	}
	return nil, fmt.Errorf("unsupported algorithm %q", s.alg)
}

// header is the base64url protected header for typ.
func (s *Signer) header(typ string) string {
	if h, ok := s.headers.Load(typ); ok {
		return h.(string)
	}
	// The members in go-jose's order, which is sorted.
	b, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ,omitempty"`
	}{s.alg, s.kid, typ})
	h, _ := s.headers.LoadOrStore(typ, b64.EncodeToString(b))
	return h.(string)
}

// SignJSON marshals v once with encoding/json and signs the result.
func (s *Signer) SignJSON(v any, typ string) (string, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("tokens: marshal claims: %w", err)
	}
	return s.Sign(payload, typ)
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

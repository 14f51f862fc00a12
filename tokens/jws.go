package tokens

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Algorithms are the JWS algorithms Stepup signs with. Parsing refuses
// every other alg, none and HS256 included, before any key is looked at.
var Algorithms = []jose.SignatureAlgorithm{ES256, RS256, EdDSA}

// JWS is a compact JWS whose header has been read and whose signature has
// not been checked yet. It is the one JWS check behind the server's own
// verification and package verify's, so the two cannot drift apart.
type JWS struct {
	obj *jose.JSONWebSignature
	// KeyID and Algorithm are the header's kid and alg; Type its typ, ""
	// when absent.
	KeyID, Algorithm, Type string
}

// ParseJWS reads a compact JWS with exactly one signature, one of
// Algorithms and a kid. Failures are *Error: Malformed, BadSignature for
// an alg outside Algorithms, UnknownKey for a missing kid.
func ParseJWS(token string) (*JWS, error) {
	obj, err := jose.ParseSignedCompact(token, Algorithms)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, &Error{Reason: BadSignature, Err: err}
		}
		return nil, &Error{Reason: Malformed, Err: err}
	}
	if len(obj.Signatures) != 1 {
		return nil, fail(Malformed, "want exactly one signature")
	}
	h := obj.Signatures[0].Header
	j := &JWS{obj: obj, KeyID: h.KeyID, Algorithm: h.Algorithm}
	if v, present := h.ExtraHeaders[jose.HeaderType]; present {
		s, ok := v.(string)
		if !ok {
			return nil, fail(Malformed, "typ header is not a string")
		}
		j.Type = s
	}
	if j.KeyID == "" {
		return nil, fail(UnknownKey, "no kid in the header")
	}
	return j, nil
}

// Verify checks the signature with key, which the caller found under the
// header's kid, and returns the payload.
func (j *JWS) Verify(key jose.JSONWebKey) ([]byte, error) {
	// The parser only knows the alg is one of ours; it must also be the
	// one this key was made for, or a token could be checked under a
	// scheme its key was never meant for.
	if j.Algorithm != key.Algorithm || !keyFits(key.Algorithm, key.Key) {
		return nil, fail(BadSignature, "header alg %q, key %q is %s", j.Algorithm, j.KeyID, key.Algorithm)
	}
	payload, err := j.obj.Verify(key.Key)
	if err != nil {
		return nil, &Error{Reason: BadSignature, Err: err}
	}
	return payload, nil
}

// IsAccessTokenType accepts both spellings of an access token's typ that
// RFC 9068 section 4 names; media type names are case-insensitive.
func IsAccessTokenType(typ string) bool {
	return strings.EqualFold(typ, TypAccessToken) || strings.EqualFold(typ, "application/"+TypAccessToken)
}

// AccessCheck is what an access token's claims must satisfy.
type AccessCheck struct {
	// Issuer must equal iss.
	Issuer string
	// Audiences: aud must include at least one of them.
	Audiences []string
	Now       time.Time
	// Leeway is the clock skew allowed for exp, iat and nbf.
	Leeway time.Duration
}

// wireClaims reads what AccessClaims does not: nbf, and an aud that is a
// single string, as RFC 7519 allows. Its aud shadows the embedded one.
type wireClaims struct {
	AccessClaims
	Audience  audience `json:"aud"`
	NotBefore int64    `json:"nbf"`
}

type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = audience{s}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

// Claims decodes a verified payload and checks it: sub, exp and iat
// present, iss and aud as configured, and the times within the leeway of
// Now. Failures are *Error.
func (c AccessCheck) Claims(payload []byte) (*AccessClaims, error) {
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fail(Malformed, "claims: %v", err)
	}
	claims := &w.AccessClaims
	claims.Audience = w.Audience
	switch {
	case claims.Subject == "":
		return nil, fail(Malformed, "no sub claim")
	case claims.Expiry == 0:
		return nil, fail(Malformed, "no exp claim")
	case claims.IssuedAt == 0:
		return nil, fail(Malformed, "no iat claim")
	}
	if claims.Issuer != c.Issuer {
		return nil, fail(WrongIssuer, "iss %q, want %q", claims.Issuer, c.Issuer)
	}
	if !slices.ContainsFunc(claims.Audience, func(a string) bool { return slices.Contains(c.Audiences, a) }) {
		return nil, fail(WrongAudience, "aud %q does not include any of %q", claims.Audience, c.Audiences)
	}
	now := c.Now
	if exp := time.Unix(claims.Expiry, 0); !now.Before(exp.Add(c.Leeway)) {
		return nil, fail(Expired, "exp %s, now %s", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	latest := now.Add(c.Leeway)
	if iat := time.Unix(claims.IssuedAt, 0); iat.After(latest) {
		return nil, fail(NotYetValid, "iat %s, now %s", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if nbf := time.Unix(w.NotBefore, 0); w.NotBefore != 0 && nbf.After(latest) {
		return nil, fail(NotYetValid, "nbf %s, now %s", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return claims, nil
}

func fail(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

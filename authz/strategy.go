package authz

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/stepup-dev/stepup/tokens"
)

// Every token's storage signature is "<family>.<digest>": the family is the
// fosite request ID shared by a code and every token rotated from it, so the
// store finds a token's family, and with it every record an atomic step
// needs, from the token alone.

var b64 = base64.RawURLEncoding

// validFamily keeps what we put in store keys to fosite's UUIDs and our own
// alphabet, whatever a client sends.
func validFamily(f string) bool {
	if f == "" || len(f) > 64 {
		return false
	}
	for _, c := range f {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// splitSignature returns the family and digest of a signature, or ok=false.
func splitSignature(sig string) (family, digest string, ok bool) {
	family, digest, ok = strings.Cut(sig, ".")
	return family, digest, ok && validFamily(family) && digest != ""
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b64.EncodeToString(b)
}

// opaqueTokens are authorization codes and refresh tokens:
// "<prefix><family>.<secret>". The store keeps only an HMAC of the secret, so
// a copy of the store yields no usable token.
type opaqueTokens struct {
	prefix   string
	kind     fosite.TokenType
	key      []byte
	lifespan time.Duration // used when the session has no expiry for kind
	now      func() time.Time
}

func (o *opaqueTokens) digest(secret string) string {
	m := hmac.New(sha256.New, o.key)
	m.Write([]byte(secret))
	return b64.EncodeToString(m.Sum(nil))
}

func (o *opaqueTokens) generate(r fosite.Requester) (string, string, error) {
	family := r.GetID()
	if !validFamily(family) {
		return "", "", errors.New("request id is not a valid grant family")
	}
	secret := randomString(32)
	return o.prefix + family + "." + secret, family + "." + o.digest(secret), nil
}

// signature maps a presented token to its storage signature; a malformed
// token maps to "", which no record has.
func (o *opaqueTokens) signature(token string) string {
	rest, ok := strings.CutPrefix(token, o.prefix)
	if !ok {
		return ""
	}
	family, secret, ok := strings.Cut(rest, ".")
	if !ok || !validFamily(family) || len(secret) != 43 {
		return ""
	}
	return family + "." + o.digest(secret)
}

func (o *opaqueTokens) validate(r fosite.Requester) error {
	exp := r.GetSession().GetExpiresAt(o.kind)
	if exp.IsZero() && o.lifespan > 0 {
		exp = r.GetRequestedAt().Add(o.lifespan)
	}
	if !exp.IsZero() && !o.now().Before(exp) {
		return fosite.ErrTokenExpired.WithHintf("The %s expired at %s.", strings.ReplaceAll(string(o.kind), "_", " "), exp.UTC().Format(time.RFC3339))
	}
	return nil
}

type codeStrategy struct{ opaqueTokens }

func (c *codeStrategy) AuthorizeCodeSignature(_ context.Context, token string) string {
	return c.signature(token)
}
func (c *codeStrategy) GenerateAuthorizeCode(_ context.Context, r fosite.Requester) (string, string, error) {
	return c.generate(r)
}
func (c *codeStrategy) ValidateAuthorizeCode(_ context.Context, r fosite.Requester, _ string) error {
	return c.validate(r)
}

type refreshStrategy struct{ opaqueTokens }

func (c *refreshStrategy) RefreshTokenSignature(_ context.Context, token string) string {
	return c.signature(token)
}
func (c *refreshStrategy) GenerateRefreshToken(_ context.Context, r fosite.Requester) (string, string, error) {
	return c.generate(r)
}
func (c *refreshStrategy) ValidateRefreshToken(_ context.Context, r fosite.Requester, _ string) error {
	return c.validate(r)
}

// signingKeys is what token issuance needs from the key manager.
type signingKeys interface {
	Signer(ctx context.Context, alg string) (*tokens.Signer, error)
	Verify(ctx context.Context, token string) (payload []byte, typ string, err error)
}

// accessTokens issues RFC 9068 JWT access tokens. The jti is
// "<family>.<random>", unique per issuance, and the storage signature is the
// family with a digest of the JWS signature, so a forged token that copies a
// real jti finds no record.
type accessTokens struct {
	issuer   string
	audience []string // when the grant names none
	alg      string
	lifespan time.Duration
	keys     signingKeys
	now      func() time.Time
}

func (a *accessTokens) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	s, ok := r.GetSession().(*Session)
	if !ok {
		return "", "", errors.New("access token for a foreign session type")
	}
	family := r.GetID()
	if !validFamily(family) {
		return "", "", errors.New("request id is not a valid grant family")
	}
	now := a.now()
	exp := s.GetExpiresAt(fosite.AccessToken)
	if exp.IsZero() {
		exp = now.Add(a.lifespan)
	}
	aud := []string(r.GetGrantedAudience())
	if len(aud) == 0 {
		aud = a.audience
	}
	claims := tokens.AccessClaims{
		Issuer:   a.issuer,
		Subject:  s.Subject,
		Audience: aud,
		Expiry:   exp.Unix(),
		IssuedAt: now.Unix(),
		ID:       family + "." + randomString(12),
		ClientID: r.GetClient().GetID(),
		Scope:    r.GetGrantedScopes(),
		AMR:      s.AMR(),
		Grant:    s.Grant,
	}
	if at := s.AuthTime(); !at.IsZero() {
		claims.AuthTime = at.Unix()
	}
	if claims.Scope == nil {
		claims.Scope = []string{}
	}
	signer, err := a.keys.Signer(ctx, a.alg)
	if err != nil {
		return "", "", err
	}
	token, err := signer.SignJSON(claims, "at+jwt")
	if err != nil {
		return "", "", err
	}
	_, jws, _ := cutLast(token)
	return token, accessSignature(family, jws), nil
}

func accessSignature(family, jwsSignature string) string {
	sum := sha256.Sum256([]byte(jwsSignature))
	return family + "." + b64.EncodeToString(sum[:])
}

func (a *accessTokens) AccessTokenSignature(_ context.Context, token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 8192 {
		return ""
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		ID string `json:"jti"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return ""
	}
	family, _, ok := strings.Cut(c.ID, ".")
	if !ok || !validFamily(family) {
		return ""
	}
	return accessSignature(family, parts[2])
}

func (a *accessTokens) ValidateAccessToken(ctx context.Context, _ fosite.Requester, token string) error {
	payload, typ, err := a.keys.Verify(ctx, token)
	if err != nil {
		return fosite.ErrTokenSignatureMismatch.WithWrap(err).WithHint("The access token's signature is not valid.")
	}
	if typ != "at+jwt" {
		return fosite.ErrInvalidTokenFormat.WithHint("The token is not an access token.")
	}
	var c tokens.AccessClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return fosite.ErrInvalidTokenFormat.WithWrap(err)
	}
	if !a.now().Before(time.Unix(c.Expiry, 0)) {
		return fosite.ErrTokenExpired.WithHint("The access token expired.")
	}
	return nil
}

var (
	_ oauth2.AuthorizeCodeStrategy = (*codeStrategy)(nil)
	_ oauth2.RefreshTokenStrategy  = (*refreshStrategy)(nil)
	_ oauth2.AccessTokenStrategy   = (*accessTokens)(nil)
)

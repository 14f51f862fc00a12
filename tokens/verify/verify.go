// Package verify is what a resource server imports to accept Stepup access
// tokens (RFC 9068 JWTs): it checks them against the issuer's published
// JWKS, which it fetches and caches itself, and gives back the claims, or
// an Error whose Reason says why not. Middleware and Challenge put the
// same answers on HTTP.
//
// It depends on the standard library, go-jose and package tokens only, so
// that resource servers written elsewhere can take it as it is.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/stepup-dev/stepup/tokens"
)

// Defaults for Config.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultLeeway          = 30 * time.Second
	DefaultRefreshInterval = time.Hour
	// DefaultMinRefetch bounds how often tokens naming unknown keys make
	// us fetch the JWKS, so that a stream of forged kids cannot turn the
	// resource server into a load generator against the issuer.
	DefaultMinRefetch = 10 * time.Second
)

// Config of a Verifier. Zero values take the defaults noted.
type Config struct {
	// Issuer is the Stepup server's base URL; required. A token's iss must
	// be exactly this string.
	Issuer string
	// JWKSURL is where the keys are. Default: Issuer + "/.well-known/jwks.json".
	JWKSURL string
	// Audience must be among a token's aud; required. Stepup's tokens
	// carry the issuer unless the client asked for another audience.
	Audience string
	// HTTPClient fetches the JWKS. Default: a client with DefaultTimeout.
	// A fetch is given DefaultTimeout in any case, since requests wait
	// for it.
	HTTPClient *http.Client
	Now        func() time.Time // time.Now
	// Leeway is the clock skew allowed for exp, iat and nbf.
	Leeway time.Duration // DefaultLeeway
	// RefreshInterval is how old the cached JWKS may get before it is
	// fetched again; meanwhile it keeps being used.
	RefreshInterval time.Duration // DefaultRefreshInterval
	// MinRefetch is the least time between fetches that a token with an
	// unknown kid, or a failed fetch, may trigger.
	MinRefetch time.Duration // DefaultMinRefetch
	// Logger is where Middleware reports refusals: unavailable keys at
	// warning level, refused tokens at debug. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.JWKSURL == "" && c.Issuer != "" {
		c.JWKSURL = strings.TrimSuffix(c.Issuer, "/") + "/.well-known/jwks.json"
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.MinRefetch == 0 {
		c.MinRefetch = DefaultMinRefetch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem New would refuse.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("verify: the issuer is required"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("verify: the audience is required"))
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("verify: JWKS URL %q must be an absolute http(s) URL", c.JWKSURL))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Leeway", c.Leeway}, {"RefreshInterval", c.RefreshInterval}, {"MinRefetch", c.MinRefetch}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("verify: %s must not be negative, got %v", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// Verifier checks access tokens of one issuer for one audience. It is safe
// for concurrent use.
type Verifier struct {
	cfg Config

	mu   sync.Mutex
	keys jose.JSONWebKeySet // usable keys only; replaced whole, never changed
	// fetched is when keys last arrived; zero before the first success.
	fetched time.Time
	// lastTry is when the last fetch started, and lastErr how it ended;
	// together they pace the fetches that unknown kids and failures cause.
	lastTry time.Time
	lastErr error
	// inflight is the fetch under way, if any, so that a burst of
	// requests waits for one fetch rather than making one each.
	inflight *fetchCall
}

// New checks cfg and returns a Verifier. It does not fetch anything: the
// keys come with the first token.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg.withDefaults()}, nil
}

// algorithms are the ones Stepup signs with. Parsing refuses every other
// alg, none and HS256 included, before any key is looked at.
var algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.EdDSA}

// wireClaims reads what AccessClaims does not: nbf, and an aud that is a
// single string, as RFC 7519 allows. Its aud shadows the embedded one.
type wireClaims struct {
	tokens.AccessClaims
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

// Verify checks a raw access token and returns its claims. The token must
// be a compact JWS with typ at+jwt, signed by a key the issuer publishes
// under the header's kid with the alg the key is published for; iss and
// aud must match the Config, and exp, iat and nbf hold at now within the
// leeway. Any failure is an *Error.
//
// ctx bounds only the wait for the issuer's keys when they must be
// fetched; the fetch itself goes on for whoever else is waiting.
func (v *Verifier) Verify(ctx context.Context, token string) (*tokens.AccessClaims, error) {
	obj, err := jose.ParseSignedCompact(token, algorithms)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, &Error{Reason: BadSignature, Err: err}
		}
		return nil, &Error{Reason: Malformed, Err: err}
	}
	h := obj.Signatures[0].Header
	// Checked before any key is fetched: an ID token or some other JWT of
	// the issuer's is refused as what it is, whoever signed it.
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if !isAccessTokenType(typ) {
		return nil, fail(WrongType, "header typ %q, want %q", typ, tokens.TypAccessToken)
	}
	if h.KeyID == "" {
		return nil, fail(UnknownKey, "no kid in the header")
	}
	now := v.cfg.Now()
	key, err := v.key(ctx, h.KeyID, h.Algorithm, now)
	if err != nil {
		return nil, err
	}
	// The parser only knows the alg is one we accept; it must also be the
	// one this key was published for, or a token could be checked under a
	// scheme its key was never meant for.
	if h.Algorithm != key.Algorithm {
		return nil, fail(BadSignature, "header alg %s, key %q is for %s", h.Algorithm, h.KeyID, key.Algorithm)
	}
	payload, err := obj.Verify(key.Key)
	if err != nil {
		return nil, &Error{Reason: BadSignature, Err: err}
	}

	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fail(Malformed, "claims: %v", err)
	}
	c := &w.AccessClaims
	c.Audience = w.Audience
	switch {
	case c.Subject == "":
		return nil, fail(Malformed, "no sub claim")
	case c.Expiry == 0:
		return nil, fail(Malformed, "no exp claim")
	case c.IssuedAt == 0:
		return nil, fail(Malformed, "no iat claim")
	}
	if c.Issuer != v.cfg.Issuer {
		return nil, fail(WrongIssuer, "iss %q, want %q", c.Issuer, v.cfg.Issuer)
	}
	if !slices.Contains(c.Audience, v.cfg.Audience) {
		return nil, fail(WrongAudience, "aud %q does not include %q", c.Audience, v.cfg.Audience)
	}
	if exp := time.Unix(c.Expiry, 0); !now.Before(exp.Add(v.cfg.Leeway)) {
		return nil, fail(Expired, "exp %s, now %s", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	latest := now.Add(v.cfg.Leeway)
	if iat := time.Unix(c.IssuedAt, 0); iat.After(latest) {
		return nil, fail(NotYetValid, "iat %s, now %s", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if nbf := time.Unix(w.NotBefore, 0); w.NotBefore != 0 && nbf.After(latest) {
		return nil, fail(NotYetValid, "nbf %s, now %s", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// isAccessTokenType accepts both spellings RFC 9068 section 4 names; media
// type names are case-insensitive.
func isAccessTokenType(typ string) bool {
	return strings.EqualFold(typ, tokens.TypAccessToken) || strings.EqualFold(typ, "application/"+tokens.TypAccessToken)
}

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
	// Clients, when set, are the only client_ids whose tokens are
	// accepted: a resource server that serves people through first-party
	// tools refuses a token a third-party relying party got for the same
	// audience.
	Clients []string
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

// Verify checks a raw access token and returns its claims. The token must
// be a compact JWS with typ at+jwt, signed by a key the issuer publishes
// under the header's kid with the alg the key is published for; iss and
// aud must match the Config, and exp, iat and nbf hold at now within the
// leeway. Any failure is an *Error.
//
// ctx bounds only the wait for the issuer's keys when they must be
// fetched; the fetch itself goes on for whoever else is waiting.
func (v *Verifier) Verify(ctx context.Context, token string) (*tokens.AccessClaims, error) {
	jws, err := tokens.ParseJWS(token)
	if err != nil {
		return nil, err
	}
	// Checked before any key is fetched: an ID token or some other JWT of
	// the issuer's is refused as what it is, whoever signed it.
	if !tokens.IsAccessTokenType(jws.Type) {
		return nil, fail(WrongType, "header typ %q, want %q", jws.Type, tokens.TypAccessToken)
	}
	now := v.cfg.Now()
	key, err := v.key(ctx, jws.KeyID, jws.Algorithm, now)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify(*key)
	if err != nil {
		return nil, err
	}
	claims, err := tokens.AccessCheck{Issuer: v.cfg.Issuer, Audiences: []string{v.cfg.Audience}, Now: now, Leeway: v.cfg.Leeway}.Claims(payload)
	if err != nil {
		return nil, err
	}
	if len(v.cfg.Clients) > 0 && !slices.Contains(v.cfg.Clients, claims.ClientID) {
		return nil, fail(WrongClient, "client_id %q is not one of %q", claims.ClientID, v.cfg.Clients)
	}
	return claims, nil
}

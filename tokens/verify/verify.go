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
	"crypto/sha256"
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
	// CacheSize is how many verified tokens are remembered (see
	// Verifier); -1 remembers none. Default DefaultCacheSize.
	CacheSize int
}

// DefaultCacheSize bounds the verified-token cache.
const DefaultCacheSize = 10000

// cacheTTL is the longest a verified token is taken on trust without its
// signature being checked again: a key the issuer withdraws stops
// working within it.
const cacheTTL = time.Minute

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
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
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

	// seen remembers tokens verified lately, by their SHA-256: a resource
	// server sees the same token on every request of a session, and pays
	// for its signature once a minute rather than each time. Only exp can
	// turn a verified token bad (iat and nbf only get truer), so an entry
	// lasts until the token expires, and at most cacheTTL.
	seen tokens.Recent[tokens.AccessClaims]
}

// New checks cfg and returns a Verifier. It does not fetch anything: the
// keys come with the first token.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg.withDefaults()}
	v.seen.Size = v.cfg.CacheSize
	return v, nil
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
	now := v.cfg.Now()
	sum := sha256.Sum256([]byte(token))
	claims, ok := v.recall(sum, now)
	if !ok {
		var err error
		if claims, err = v.verify(ctx, token, now); err != nil {
			return nil, err
		}
		v.remember(sum, claims, now)
	}
	if len(v.cfg.Clients) > 0 && !slices.Contains(v.cfg.Clients, claims.ClientID) {
		return nil, fail(WrongClient, "client_id %q is not one of %q", claims.ClientID, v.cfg.Clients)
	}
	return claims, nil
}

// recall returns a copy of a token's claims verified lately.
func (v *Verifier) recall(sum [sha256.Size]byte, now time.Time) (*tokens.AccessClaims, bool) {
	c, ok := v.seen.Get(sum, now)
	if !ok {
		return nil, false
	}
	c.Audience, c.Scope, c.AMR = slices.Clone(c.Audience), slices.Clone(c.Scope), slices.Clone(c.AMR)
	return &c, true
}

func (v *Verifier) remember(sum [sha256.Size]byte, claims *tokens.AccessClaims, now time.Time) {
	until := time.Unix(claims.Expiry, 0).Add(v.cfg.Leeway)
	if limit := now.Add(cacheTTL); limit.Before(until) {
		until = limit
	}
	c := *claims
	c.Audience, c.Scope, c.AMR = slices.Clone(c.Audience), slices.Clone(c.Scope), slices.Clone(c.AMR)
	v.seen.Put(sum, c, until, now)
}

// verify checks a token's signature and claims.
func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (*tokens.AccessClaims, error) {
	jws, err := tokens.ParseJWS(token)
	if err != nil {
		return nil, err
	}
	// Checked before any key is fetched: an ID token or some other JWT of
	// the issuer's is refused as what it is, whoever signed it.
	if !tokens.IsAccessTokenType(jws.Type) {
		return nil, fail(WrongType, "header typ %q, want %q", jws.Type, tokens.TypAccessToken)
	}
	key, err := v.key(ctx, jws.KeyID, jws.Algorithm, now)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify(*key)
	if err != nil {
		return nil, err
	}
	return tokens.AccessCheck{Issuer: v.cfg.Issuer, Audiences: []string{v.cfg.Audience}, Now: now, Leeway: v.cfg.Leeway}.Claims(payload)
}

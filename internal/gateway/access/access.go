// Package access asks the Stepup server whether a person may use an
// organization's services and what the organization demands of their
// authentication (GET /api/orgs/{org}/access/{user_id}), with the gateway's
// own client credentials, and remembers the answers briefly.
package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/tokens"
)

// Scope is what the gateway's token must carry to read access answers.
const Scope = "access.read"

// Defaults for Config.
const (
	// DefaultTTL is how long an answer is reused. Short, because a person
	// removed from an organization or an organization that starts to
	// require MFA should take effect within a moment, not a session.
	DefaultTTL     = 30 * time.Second
	DefaultTimeout = 10 * time.Second
	// DefaultMaxEntries bounds the answer cache; when full, expired entries
	// are dropped and then, if need be, everything.
	DefaultMaxEntries = 10000
)

// maxBody bounds an answer, which is a few dozen bytes.
const maxBody = 64 << 10

// tokenLeeway renews the gateway's token this long before it expires, so a
// request never leaves with a token that lapses on the way.
const tokenLeeway = 30 * time.Second

// Config of a Client. Zero values take defaults.
type Config struct {
	// Issuer is the Stepup server's base URL; required.
	Issuer string
	// ClientID and ClientSecret are the gateway's client credentials
	// (grant client_credentials, scope access.read); required.
	ClientID, ClientSecret string
	// HTTPClient talks to the server. Default: a client with Timeout.
	HTTPClient *http.Client
	Timeout    time.Duration    // DefaultTimeout, for one request
	TTL        time.Duration    // DefaultTTL
	MaxEntries int              // DefaultMaxEntries
	Now        func() time.Time // time.Now
}

func (c Config) withDefaults() Config {
	c.Issuer = strings.TrimSuffix(c.Issuer, "/")
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: c.Timeout}
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Answer is the server's word on one person and one organization, in the
// type the server writes it with.
type Answer = tokens.Access

// Client reads access answers. Safe for concurrent use.
type Client struct {
	cfg   Config
	creds clientcredentials.Config

	mu      sync.Mutex
	answers map[key]entry

	// tokenMu is held while fetching, so concurrent lookups share one token
	// request without blocking cache hits.
	tokenMu sync.Mutex
	token   *oauth2.Token
}

type key struct{ org, user string }

type entry struct {
	answer  Answer
	expires time.Time
}

// New returns a client; it does not contact the server.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("access: the issuer URL is required"))
	}
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		errs = append(errs, errors.New("access: the gateway's client id and secret are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Client{
		cfg: cfg,
		creds: clientcredentials.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			TokenURL: cfg.Issuer + "/oauth2/token", Scopes: []string{Scope},
		},
		answers: map[key]entry{},
	}, nil
}

// Lookup returns whether userID may use org's services and on what terms,
// from the cache when a recent answer is there. Any error means the server
// could not be asked; the caller should refuse rather than guess.
func (c *Client) Lookup(ctx context.Context, org, userID string) (Answer, error) {
	k := key{org, userID}
	if a, ok := c.cached(k); ok {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	a, err := c.ask(ctx, org, userID)
	if err != nil {
		return Answer{}, err
	}
	c.store(k, a)
	return a, nil
}

func (c *Client) cached(k key) (Answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.answers[k]
	if !ok || !c.cfg.Now().Before(e.expires) {
		return Answer{}, false
	}
	return e.answer, true
}

func (c *Client) store(k key, a Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if len(c.answers) >= c.cfg.MaxEntries {
		for k, e := range c.answers {
			if !now.Before(e.expires) {
				delete(c.answers, k)
			}
		}
		if len(c.answers) >= c.cfg.MaxEntries {
			clear(c.answers)
		}
	}
	c.answers[k] = entry{answer: a, expires: now.Add(c.cfg.TTL)}
}

// errUnauthorized is a 401 from the API: our token is no longer good, for
// instance because the server rotated its keys or restarted.
var errUnauthorized = errors.New("the server did not accept the gateway's token")

func (c *Client) ask(ctx context.Context, org, userID string) (Answer, error) {
	a, err := c.askOnce(ctx, org, userID)
	if errors.Is(err, errUnauthorized) {
		c.dropToken()
		a, err = c.askOnce(ctx, org, userID)
	}
	return a, err
}

func (c *Client) askOnce(ctx context.Context, org, userID string) (Answer, error) {
	tok, err := c.accessToken(ctx)
	if err != nil {
		return Answer{}, err
	}
	u := c.cfg.Issuer + "/api/orgs/" + url.PathEscape(org) + "/access/" + url.PathEscape(userID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Answer{}, fmt.Errorf("access: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	tok.SetAuthHeader(req)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("access: GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Answer{}, fmt.Errorf("access: GET %s: %w", u, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return Answer{}, fmt.Errorf("access: GET %s: %w: %s", u, errUnauthorized, excerpt(body))
	default:
		return Answer{}, fmt.Errorf("access: GET %s: %s: %s", u, resp.Status, excerpt(body))
	}
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return Answer{}, fmt.Errorf("access: GET %s: not an access answer: %w", u, err)
	}
	if !a.Member {
		// Whatever else came with a "no", it grants nothing.
		a = Answer{}
	}
	return a, nil
}

// accessToken returns the cached client-credentials token or fetches one.
func (c *Client) accessToken(ctx context.Context) (*oauth2.Token, error) {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	if c.token != nil && (c.token.Expiry.IsZero() || c.cfg.Now().Add(tokenLeeway).Before(c.token.Expiry)) {
		return c.token, nil
	}
	tok, err := c.creds.Token(context.WithValue(ctx, oauth2.HTTPClient, c.cfg.HTTPClient))
	if err != nil {
		return nil, fmt.Errorf("access: getting a token for client %q: %w", c.cfg.ClientID, err)
	}
	c.token = tok
	return tok, nil
}

func (c *Client) dropToken() {
	c.tokenMu.Lock()
	c.token = nil
	c.tokenMu.Unlock()
}

// excerpt keeps error messages short when a proxy answers with a page.
func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

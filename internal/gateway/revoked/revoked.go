// Package revoked keeps the serials of the SSH certificates the Stepup
// server has revoked: the list at GET /ssh/revoked, fetched every few
// seconds with If-None-Match, so that a poll that finds nothing new costs
// the server a 304. A gateway that has not managed to fetch the list for
// longer than MaxAge cannot tell a revoked certificate from a good one,
// and says so: Status answers Unknown, and the gateway admits no one.
package revoked

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults for Config.
const (
	DefaultRefreshEvery = 5 * time.Second
	// DefaultMaxAge is how old the list may grow, for want of a fetch that
	// succeeds, before certificates are refused: six missed polls.
	DefaultMaxAge  = 30 * time.Second
	DefaultTimeout = 10 * time.Second
)

// maxBody bounds the list we read: some 80 bytes an entry, and entries
// live an hour at most.
const maxBody = 16 << 20

// Config of a Cache. Zero values take defaults.
type Config struct {
	// Issuer is the Stepup server's base URL; required.
	Issuer string
	// HTTPClient fetches the list. Default: a client with Timeout.
	HTTPClient   *http.Client
	Timeout      time.Duration    // DefaultTimeout, for one fetch
	RefreshEvery time.Duration    // DefaultRefreshEvery
	MaxAge       time.Duration    // DefaultMaxAge; at least RefreshEvery
	Now          func() time.Time // time.Now
	Logger       *slog.Logger     // slog.Default()
}

func (c Config) withDefaults() Config {
	c.Issuer = strings.TrimSuffix(c.Issuer, "/")
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: c.Timeout}
	}
	if c.RefreshEvery == 0 {
		c.RefreshEvery = DefaultRefreshEvery
	}
	if c.MaxAge == 0 {
		c.MaxAge = max(DefaultMaxAge, 2*c.RefreshEvery)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Status is what the list says of a certificate.
type Status uint8

const (
	// Good: not on the list, and the list is recent.
	Good Status = iota + 1
	// Revoked: on the list.
	Revoked
	// Unknown: not on the list, but the list is older than MaxAge.
	Unknown
)

// StaleError is why a status is Unknown.
type StaleError struct {
	// Age is how long ago the list was last fetched; zero if never.
	Age time.Duration
	// Err is the last fetch's failure.
	Err error
}

func (e *StaleError) Error() string {
	if e.Age == 0 {
		return fmt.Sprintf("the SSH revocation list has not been fetched yet: %v", e.Err)
	}
	return fmt.Sprintf("the SSH revocation list is %v old: %v", e.Age.Round(time.Second), e.Err)
}

func (e *StaleError) Unwrap() error { return e.Err }

// Cache is the current list. Safe for concurrent use; call New.
type Cache struct {
	cfg Config

	mu      sync.Mutex
	serials map[uint64]bool
	etag    string
	fetched time.Time // of the last fetch that succeeded
	lastErr error     // of the last fetch, nil if it succeeded

	fetching sync.Mutex
}

// New returns an empty cache that knows nothing yet: every status is
// Unknown until Refresh succeeds.
func New(cfg Config) (*Cache, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("revoked: the issuer URL is required")
	case cfg.RefreshEvery < 0 || cfg.MaxAge < cfg.RefreshEvery:
		return nil, fmt.Errorf("revoked: the list's maximum age (%v) must be at least its refresh interval (%v)", cfg.MaxAge, cfg.RefreshEvery)
	}
	return &Cache{cfg: cfg, serials: map[uint64]bool{}, lastErr: errors.New("no fetch yet")}, nil
}

// MaxAge is how old the list may be before Status says Unknown.
func (c *Cache) MaxAge() time.Duration { return c.cfg.MaxAge }

// Status says whether the certificate with serial is revoked; err
// explains Unknown.
func (c *Cache) Status(serial uint64) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.serials[serial] {
		return Revoked, nil
	}
	if err := c.staleLocked(); err != nil {
		return Unknown, err
	}
	return Good, nil
}

// Stale returns a *StaleError while the list is too old to go by, and nil
// otherwise.
func (c *Cache) Stale() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.staleLocked()
}

func (c *Cache) staleLocked() error {
	if c.fetched.IsZero() {
		return &StaleError{Err: c.lastErr}
	}
	if age := c.cfg.Now().Sub(c.fetched); age > c.cfg.MaxAge {
		return &StaleError{Age: age, Err: c.lastErr}
	}
	return nil
}

// IsRevoked is for ssh.CertChecker: true for a revoked certificate, and
// for every certificate while the list is too old to tell (fail closed).
func (c *Cache) IsRevoked(cert *ssh.Certificate) bool {
	st, _ := c.Status(cert.Serial)
	return st != Good
}

// Len is how many serials are listed.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.serials)
}

// Refresh fetches the list, sending the ETag of the one held. It reports
// whether the list changed (the first list always does). On error the list held stays, and ages.
func (c *Cache) Refresh(ctx context.Context) (changed bool, err error) {
	c.fetching.Lock()
	defer c.fetching.Unlock()
	c.mu.Lock()
	etag := c.etag
	c.mu.Unlock()

	serials, newTag, err := c.fetch(ctx, etag)
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
	if err != nil {
		return false, err
	}
	first := c.fetched.IsZero()
	c.fetched = now
	if serials == nil { // 304
		return false, nil
	}
	changed = first || len(serials) != len(c.serials)
	for s := range serials {
		changed = changed || !c.serials[s]
	}
	c.serials, c.etag = serials, newTag
	return changed, nil
}

// fetch returns the listed serials and the ETag, or nil serials for 304.
func (c *Cache) fetch(ctx context.Context, etag string) (map[uint64]bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	url := c.cfg.Issuer + "/ssh/revoked"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", fmt.Errorf("revoked: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("revoked: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		if etag != "" {
			return nil, etag, nil
		}
		fallthrough
	default:
		return nil, "", fmt.Errorf("revoked: GET %s: %s", url, resp.Status)
	}
	var body struct {
		Revoked *[]struct {
			Serial string `json:"serial"`
		} `json:"revoked"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&body); err != nil || body.Revoked == nil {
		return nil, "", fmt.Errorf("revoked: GET %s: not the revocation list: %v", url, err)
	}
	serials := make(map[uint64]bool, len(*body.Revoked))
	for _, e := range *body.Revoked {
		s, err := strconv.ParseUint(e.Serial, 10, 64)
		if err != nil {
			// Unlike a damaged CA entry, a damaged serial cannot be
			// skipped: it may be the one that matters.
			return nil, "", fmt.Errorf("revoked: GET %s: serial %q: %w", url, e.Serial, err)
		}
		serials[s] = true
	}
	return serials, resp.Header.Get("ETag"), nil
}

// Run refreshes every RefreshEvery until ctx is done, logging failures
// (once when they begin, and when the list grows too old) and calling
// changed after each refresh that changed the list.
func (c *Cache) Run(ctx context.Context, changed func()) {
	t := time.NewTicker(c.cfg.RefreshEvery)
	defer t.Stop()
	failing, stale := false, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ch, err := c.Refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				c.cfg.Logger.Warn("could not refresh the SSH revocation list; keeping the one held", "err", err, "max_age", c.cfg.MaxAge)
				failing = true
			}
			if c.Stale() != nil && !stale {
				c.cfg.Logger.Error("the SSH revocation list is too old; refusing every certificate until it is fetched again", "max_age", c.cfg.MaxAge, "err", err)
				stale = true
			}
		default:
			if failing {
				c.cfg.Logger.Info("fetched the SSH revocation list again", "revoked", c.Len())
			}
			failing, stale = false, false
			if ch && changed != nil {
				changed()
			}
		}
	}
}

// Package trust keeps the SSH user CA keys a gateway accepts: the list the
// Stepup server publishes at GET /ssh/authority, fetched at start, every
// minute, and again when a certificate names a signing key not yet seen.
package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults for Config.
const (
	DefaultRefreshEvery = time.Minute
	// DefaultMinRefetch bounds how often unknown keys make us ask again, so
	// that a stream of certificates from a foreign CA cannot turn the
	// gateway into a load generator against the server.
	DefaultMinRefetch = 5 * time.Second
	DefaultTimeout    = 10 * time.Second
)

// maxBody bounds the authority list we read; it holds a handful of lines.
const maxBody = 1 << 20

// Config of a Cache. Zero values take defaults.
type Config struct {
	// Issuer is the Stepup server's base URL; required.
	Issuer string
	// HTTPClient fetches the list. Default: a client with Timeout.
	HTTPClient *http.Client
	// Timeout bounds one fetch. Default DefaultTimeout.
	Timeout      time.Duration
	RefreshEvery time.Duration    // DefaultRefreshEvery
	MinRefetch   time.Duration    // DefaultMinRefetch
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
	if c.MinRefetch == 0 {
		c.MinRefetch = DefaultMinRefetch
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Cache is the current set of trusted CA keys. It is safe for concurrent
// use; the zero value is not usable, call New.
type Cache struct {
	cfg Config

	mu   sync.Mutex
	keys map[string]bool // ssh.PublicKey.Marshal() of each authority
	// lastTry is when a fetch last started, successful or not; it paces
	// the fetches that unknown keys trigger.
	lastTry time.Time

	// fetching serializes fetches, so that a burst of unknown keys leads
	// to one request rather than one per connection.
	fetching sync.Mutex
}

// New returns an empty cache; call Refresh or Run to fill it.
func New(cfg Config) (*Cache, error) {
	cfg = cfg.withDefaults()
	if cfg.Issuer == "" {
		return nil, errors.New("trust: the issuer URL is required")
	}
	return &Cache{cfg: cfg, keys: map[string]bool{}}, nil
}

// Len is how many authorities are trusted now.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

// IsUserAuthority reports whether key is a CA the server publishes. An
// unknown key makes the cache ask the server again, at most once per
// MinRefetch, since the server may just have rotated its CA.
func (c *Cache) IsUserAuthority(key ssh.PublicKey) bool {
	if c.known(key) {
		return true
	}
	if !c.claimRefetch() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	if err := c.Refresh(ctx); err != nil {
		c.cfg.Logger.Warn("could not refresh the SSH certificate authorities", "err", err)
	}
	return c.known(key)
}

func (c *Cache) known(key ssh.PublicKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys[string(key.Marshal())]
}

// claimRefetch reports whether an unknown key may trigger a fetch now, and
// if so counts this as the attempt, so that concurrent callers don't all go.
func (c *Cache) claimRefetch() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if !c.lastTry.IsZero() && now.Sub(c.lastTry) < c.cfg.MinRefetch {
		return false
	}
	c.lastTry = now
	return true
}

// Refresh fetches the list and replaces the trusted set. On error the
// previous set stays: a server that is briefly unreachable should not lock
// everyone out.
func (c *Cache) Refresh(ctx context.Context) error {
	c.fetching.Lock()
	defer c.fetching.Unlock()
	c.mu.Lock()
	c.lastTry = c.cfg.Now()
	c.mu.Unlock()

	keys, err := c.fetch(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.keys = keys
	c.mu.Unlock()
	return nil
}

func (c *Cache) fetch(ctx context.Context) (map[string]bool, error) {
	url := c.cfg.Issuer + "/ssh/authority"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("trust: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("trust: GET %s: %s", url, resp.Status)
	}
	var body struct {
		Authorities []string `json:"authorities"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&body); err != nil {
		return nil, fmt.Errorf("trust: GET %s: not the authority list: %w", url, err)
	}
	keys := make(map[string]bool, len(body.Authorities))
	for _, line := range body.Authorities {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			// One damaged entry must not cost us the others.
			c.cfg.Logger.Warn("ignoring an SSH authority the server listed", "line", line, "err", err)
			continue
		}
		if _, isCert := key.(*ssh.Certificate); isCert {
			c.cfg.Logger.Warn("ignoring a certificate listed as SSH authority", "line", line)
			continue
		}
		keys[string(key.Marshal())] = true
	}
	if len(keys) == 0 && len(body.Authorities) > 0 {
		return nil, fmt.Errorf("trust: GET %s: none of the %d authorities parse", url, len(body.Authorities))
	}
	return keys, nil
}

// Run refreshes every RefreshEvery until ctx is done, logging failures.
func (c *Cache) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			if err := c.Refresh(fctx); err != nil && ctx.Err() == nil {
				c.cfg.Logger.Warn("could not refresh the SSH certificate authorities", "err", err)
			}
			cancel()
		}
	}
}

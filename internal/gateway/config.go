package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/gateway/revoked"
)

// Defaults for Config.
const (
	// DefaultHandshakeTimeout bounds the time from accepting a connection
	// to its authentication (banner, key exchange, user auth), as OpenSSH's
	// LoginGraceTime does: a real client needs well under a second, and
	// whoever holds a socket open without authenticating holds a
	// connection slot.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a connection on which nothing was read or
	// written for this long: git keeps data flowing both ways, so only a
	// stuck or abandoned client ever reaches it.
	DefaultIdleTimeout = 10 * time.Minute
	DefaultMaxConns    = 256
	// DefaultMaxPreAuth is the default of MaxPreAuth with the default
	// MaxConns: half of it.
	DefaultMaxPreAuth = DefaultMaxConns / 2
	// DefaultMaxPreAuthPerSource is how many connections from one source
	// address may be unauthenticated at once (as OpenSSH's
	// PerSourceMaxStartups). Real clients are in that state for
	// milliseconds, so a few suffice even behind a NAT, and one address
	// holding idle sockets takes at most this many of the MaxConns slots.
	DefaultMaxPreAuthPerSource = 8
	// DefaultMaxSessions per connection: git and ssh use one; OpenSSH's
	// multiplexing a few.
	DefaultMaxSessions = 8
	// DefaultDecideTimeout bounds a session's wait for the access answer,
	// token request included.
	DefaultDecideTimeout = 15 * time.Second
	DefaultShutdownGrace = 10 * time.Second
	DefaultHTTPTimeout   = 10 * time.Second
)

// Config is everything a Server needs. Zero values take the defaults noted.
type Config struct {
	// Issuer is the Stepup server's base URL; required.
	Issuer string
	// Domain names the certificate extensions carrying the token's claims.
	// Default: the issuer's host name, as on the server.
	Domain string
	// Services maps each service id (the SSH login name) to the
	// organization whose policy applies to it; at least one.
	Services map[string]string
	// ClientID and ClientSecret are the gateway's client credentials at
	// the server; required.
	ClientID, ClientSecret string
	// TokenClients are the clients whose people's access tokens the HTTP
	// API takes: Stepup's own tools, never a third-party relying party that
	// got a token of the same audience. Default: DefaultTokenClients, as
	// on the server (its api.clients).
	TokenClients []string
	// HostKey identifies the gateway. Default: a fresh Ed25519 key, whose
	// fingerprint is logged, so clients see a new one on every start.
	HostKey ssh.Signer
	// GitRoot holds one bare repository per service. Default: a directory
	// under os.TempDir().
	GitRoot string
	// HTTPClient reaches the server. Default: a client with a 10 s timeout.
	HTTPClient *http.Client

	HandshakeTimeout time.Duration // DefaultHandshakeTimeout, from accept to authenticated
	IdleTimeout      time.Duration // DefaultIdleTimeout
	MaxConns         int           // DefaultMaxConns, open at once
	// MaxPreAuthPerSource bounds the connections from one source that have
	// not authenticated yet; more are closed as soon as they are accepted,
	// before they take one of the MaxConns slots. A source is an IPv4
	// address or an IPv6 /64 (what one host is usually given). Behind a
	// proxy that hides clients' addresses everyone is one source: set it
	// to MaxPreAuth there to turn the limit off. Default
	// DefaultMaxPreAuthPerSource.
	MaxPreAuthPerSource int
	// MaxPreAuth bounds the connections that have not authenticated yet,
	// from all sources together (as OpenSSH's MaxStartups), so that the
	// other MaxConns-MaxPreAuth slots always stay for connections that
	// have: many sources each just under MaxPreAuthPerSource cannot fill
	// them all. When MaxPreAuth connections are waiting, a new one does
	// not wait for a place: it takes that of the longest-waiting
	// connection of the source with the most waiting, which is closed, so
	// idle sockets from many addresses cannot keep people from logging
	// in either. At most MaxConns. Default MaxConns/2 (at least 1).
	MaxPreAuth    int
	MaxSessions   int           // DefaultMaxSessions, per connection
	DecideTimeout time.Duration // DefaultDecideTimeout
	ShutdownGrace time.Duration // DefaultShutdownGrace
	// TrustRefresh and TrustMinRefetch pace the CA list fetches; AccessTTL
	// is how long access answers are reused. See packages trust and access.
	TrustRefresh    time.Duration
	TrustMinRefetch time.Duration
	AccessTTL       time.Duration
	// RevocationRefresh is how often the revocation list is fetched
	// (revoked.DefaultRefreshEvery); once it is older than
	// RevocationMaxAge (revoked.DefaultMaxAge, at least twice the
	// refresh) for want of a fetch that succeeds, no certificate is
	// admitted. See package revoked.
	RevocationRefresh time.Duration
	RevocationMaxAge  time.Duration

	Now    func() time.Time // time.Now; certificate validity and policy
	Logger *slog.Logger     // slog.Default()
}

// serviceID keeps service ids usable as SSH user names and file names.
var serviceID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckServiceID says what is wrong with a service id, or returns nil. The
// id is the SSH login name and names the service's git repository, hence
// the short alphabet.
func CheckServiceID(id string) error {
	if !serviceID.MatchString(id) {
		return fmt.Errorf("service id %q must be letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters", id)
	}
	return nil
}

// DefaultTokenClients are the server's default first-party clients.
var DefaultTokenClients = []string{"stepup-cli", "console"}

func (c Config) withDefaults() Config {
	if len(c.TokenClients) == 0 {
		c.TokenClients = DefaultTokenClients
	}
	if c.Domain == "" {
		if u, err := url.Parse(c.Issuer); err == nil {
			c.Domain = u.Hostname()
		}
	}
	if c.GitRoot == "" {
		c.GitRoot = filepath.Join(os.TempDir(), "stepup-gateway-git")
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.DecideTimeout, DefaultDecideTimeout)
	def(&c.ShutdownGrace, DefaultShutdownGrace)
	def(&c.RevocationRefresh, revoked.DefaultRefreshEvery)
	def(&c.RevocationMaxAge, max(revoked.DefaultMaxAge, 2*c.RevocationRefresh))
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxPreAuthPerSource == 0 {
		c.MaxPreAuthPerSource = DefaultMaxPreAuthPerSource
	}
	if c.MaxPreAuth == 0 {
		c.MaxPreAuth = max(1, c.MaxConns/2)
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem New would refuse, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	switch u, err := url.Parse(c.Issuer); {
	case c.Issuer == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("gateway: issuer %q must be the server's absolute http(s) URL", c.Issuer))
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		// Whoever can change the CA list in transit can log in as anyone.
		errs = append(errs, fmt.Errorf("gateway: issuer %q uses http on a host that is not loopback; use https", c.Issuer))
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		errs = append(errs, errors.New("gateway: the client id and secret of the gateway are required"))
	}
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("gateway: no services; every login would be refused"))
	}
	for _, id := range slices.Sorted(maps.Keys(c.Services)) {
		if err := CheckServiceID(id); err != nil {
			errs = append(errs, fmt.Errorf("gateway: %w", err))
		}
		if c.Services[id] == "" {
			errs = append(errs, fmt.Errorf("gateway: service %q has no organization", id))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HandshakeTimeout", c.HandshakeTimeout}, {"IdleTimeout", c.IdleTimeout},
		{"DecideTimeout", c.DecideTimeout}, {"ShutdownGrace", c.ShutdownGrace},
		{"TrustRefresh", c.TrustRefresh}, {"TrustMinRefetch", c.TrustMinRefetch}, {"AccessTTL", c.AccessTTL},
		{"RevocationRefresh", c.RevocationRefresh}, {"RevocationMaxAge", c.RevocationMaxAge},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("gateway: %s must not be negative, got %v", d.name, d.v))
		}
	}
	if c.RevocationMaxAge < c.RevocationRefresh {
		errs = append(errs, fmt.Errorf("gateway: RevocationMaxAge %v is shorter than RevocationRefresh %v: the list would be too old between two fetches", c.RevocationMaxAge, c.RevocationRefresh))
	}
	if c.MaxConns < 0 || c.MaxPreAuth < 0 || c.MaxPreAuthPerSource < 0 || c.MaxSessions < 0 {
		errs = append(errs, errors.New("gateway: MaxConns, MaxPreAuth, MaxPreAuthPerSource and MaxSessions must not be negative"))
	} else if c.MaxPreAuth > c.MaxConns {
		errs = append(errs, fmt.Errorf("gateway: MaxPreAuth %d is more than MaxConns %d", c.MaxPreAuth, c.MaxConns))
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Package gateway is Stepup's reference SSH gateway: it accepts OpenSSH
// user certificates from Stepup's CA, and when a session starts it applies
// the policy of the organization that owns the service being logged in to,
// answering with Stepup's step-up text when the certificate's
// authentication is not enough. Allowed sessions get a tiny built-in shell
// (whoami, echo) and git over SSH.
//
// The gateway reaches the Stepup server over HTTP only.
package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/internal/gateway/gitrepo"
	"github.com/stepup-dev/stepup/internal/gateway/revoked"
	"github.com/stepup-dev/stepup/internal/gateway/trust"
)

// serverVersion is what clients see in the SSH banner exchange.
const serverVersion = "SSH-2.0-StepupGateway"

// Server is the SSH gateway. Create it with New and run it with Serve.
type Server struct {
	cfg     Config
	log     *slog.Logger
	sshCfg  *ssh.ServerConfig
	checker *ssh.CertChecker
	trust   *trust.Cache
	revoked *revoked.Cache
	access  AccessLookup
	repos   *gitrepo.Repos

	slots   chan struct{} // one per open connection, up to MaxConns
	preAuth *preAuth      // unauthenticated connections, per source and in all
	// Refusals of new connections and connections closed to make room
	// for them, logged sparingly: they come in floods.
	tooManyFromSource, tooMany, displaced *refusalLog

	mu    sync.Mutex
	conns map[*conn]struct{}
	wg    sync.WaitGroup
}

// New checks cfg and builds the server. It does not touch the network.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	hostKey := cfg.HostKey
	if hostKey == nil {
		var err error
		if hostKey, err = newHostKey(); err != nil {
			return nil, err
		}
		cfg.Logger.Info("generated an SSH host key for this run; pass --host-key to keep one across restarts",
			"fingerprint", ssh.FingerprintSHA256(hostKey.PublicKey()))
	}
	tc, err := trust.New(trust.Config{
		Issuer: cfg.Issuer, HTTPClient: cfg.HTTPClient, RefreshEvery: cfg.TrustRefresh,
		MinRefetch: cfg.TrustMinRefetch, Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	rc, err := revoked.New(revoked.Config{
		Issuer: cfg.Issuer, HTTPClient: cfg.HTTPClient, RefreshEvery: cfg.RevocationRefresh,
		MaxAge: cfg.RevocationMaxAge, Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	ac, err := access.New(access.Config{
		Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		HTTPClient: cfg.HTTPClient, TTL: cfg.AccessTTL, Now: cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		trust:   tc,
		revoked: rc,
		access:  ac,
		repos:   &gitrepo.Repos{Root: cfg.GitRoot},
		checker: &ssh.CertChecker{IsUserAuthority: tc.IsUserAuthority, IsRevoked: rc.IsRevoked, Clock: cfg.Now},
		slots:   make(chan struct{}, cfg.MaxConns),
		preAuth: newPreAuth(cfg.MaxPreAuthPerSource, cfg.MaxPreAuth),
		conns:   map[*conn]struct{}{},
		tooManyFromSource: newRefusalLog(cfg.Logger, refusalLogEvery,
			"too many unauthenticated SSH connections from one source; closing new ones from it", "max_per_source", cfg.MaxPreAuthPerSource),
		tooMany: newRefusalLog(cfg.Logger, refusalLogEvery, "too many SSH connections; closing new ones", "max", cfg.MaxConns),
		displaced: newRefusalLog(cfg.Logger, refusalLogEvery,
			"too many unauthenticated SSH connections; closing the longest-waiting one of the source with the most for each new one", "max_preauth", cfg.MaxPreAuth),
	}
	s.sshCfg = &ssh.ServerConfig{
		PublicKeyCallback: s.authenticate,
		AuthLogCallback:   s.logAuth,
		ServerVersion:     serverVersion,
	}
	s.sshCfg.AddHostKey(hostKey)
	return s, nil
}

func newHostKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("gateway: generating a host key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

func (s *Server) logAuth(c ssh.ConnMetadata, method string, err error) {
	// OpenSSH always probes "none" first; that is not worth a line.
	if err == nil || method == "none" {
		return
	}
	s.log.Info("SSH authentication refused", "remote", c.RemoteAddr().String(), "login", c.User(), "method", method, "err", err)
}

// Serve accepts connections on l until ctx is done. Then it closes l, closes
// idle connections, gives running sessions ShutdownGrace to finish, closes
// what is left, and returns nil. Other errors from l end it too.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	fctx, cancel := context.WithTimeout(ctx, trust.DefaultTimeout)
	if err := s.trust.Refresh(fctx); err != nil {
		s.log.Warn("could not fetch the SSH certificate authorities; certificates are refused until a later attempt succeeds", "err", err)
	} else {
		s.log.Info("fetched the SSH certificate authorities", "count", s.trust.Len())
	}
	cancel()
	go s.trust.Run(ctx)
	if _, err := s.revoked.Refresh(ctx); err != nil {
		s.log.Warn("could not fetch the SSH revocation list; certificates are refused until a later attempt succeeds", "err", err)
	} else {
		s.log.Info("fetched the SSH revocation list", "revoked", s.revoked.Len(), "refresh_every", s.cfg.RevocationRefresh)
	}
	go s.revoked.Run(ctx, s.closeRevoked)

	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	err := s.accept(ctx, l)
	s.shutdown()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Server) accept(ctx context.Context, l net.Listener) error {
	var backoff time.Duration
	for {
		raw, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait, don't spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accepting an SSH connection failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		// The limits on unauthenticated connections first, so that a
		// source over its own is turned away without touching the slots
		// everyone else needs, and so that unauthenticated connections
		// never hold more than MaxPreAuth of them.
		src := sourceOf(raw.RemoteAddr())
		c := &conn{raw: raw, source: src, max: s.cfg.MaxSessions}
		victim, ok := s.preAuth.enter(c)
		if !ok {
			s.tooManyFromSource.refused(raw.RemoteAddr(), src)
			_ = raw.Close()
			continue
		}
		if victim != nil {
			s.displaced.refused(victim.raw.RemoteAddr(), victim.source)
			_ = victim.raw.Close()
		}
		// A newcomer that displaced someone takes over their slot, unless
		// they have already given it back.
		if victim == nil || !victim.slot.Swap(false) {
			select {
			case s.slots <- struct{}{}:
			default:
				s.preAuth.leave(c)
				s.tooMany.refused(raw.RemoteAddr(), src)
				_ = raw.Close()
				continue
			}
		}
		c.slot.Store(true)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				if c.slot.Swap(false) {
					<-s.slots
				}
			}()
			s.serveConn(c)
		})
	}
}

func (s *Server) shutdown() {
	s.tooManyFromSource.close()
	s.tooMany.close()
	s.displaced.close()
	s.mu.Lock()
	for c := range s.conns {
		c.drain()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(s.cfg.ShutdownGrace):
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		_ = c.raw.Close()
	}
	s.mu.Unlock()
	s.log.Warn("closed SSH connections still busy after the shutdown grace period", "count", n, "grace", s.cfg.ShutdownGrace)
	<-done
}

// conn is one client connection and its running sessions, so that a
// shutdown can close idle connections at once and busy ones when done.
type conn struct {
	raw    net.Conn
	source source // counted in preAuth until authenticated
	max    int
	// slot is set while c holds one of Server.slots: from accept until
	// it ends, or until a newcomer that displaced it takes the slot over.
	slot atomic.Bool
	// serial is the certificate's, once authenticated (0 before).
	serial atomic.Uint64

	mu       sync.Mutex
	sessions int
	draining bool
}

// begin counts a new session, or says why there may not be one.
func (c *conn) begin() (ssh.RejectionReason, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.draining:
		return ssh.ConnectionFailed, "the gateway is shutting down", false
	case c.sessions >= c.max:
		return ssh.ResourceShortage, fmt.Sprintf("at most %d sessions per connection", c.max), false
	}
	c.sessions++
	return 0, "", true
}

func (c *conn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessions--
	if c.draining && c.sessions == 0 {
		_ = c.raw.Close()
	}
}

func (c *conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if c.sessions == 0 {
		_ = c.raw.Close()
	}
}

func (s *Server) serveConn(c *conn) {
	defer c.raw.Close()
	remote := c.raw.RemoteAddr().String()
	nc := &idleConn{Conn: c.raw, idle: s.cfg.IdleTimeout}
	// One deadline for banner, key exchange and authentication together:
	// a client trickling bytes cannot stretch it.
	_ = c.raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(nc, s.sshCfg)
	// Authenticated, or gone: either way no longer waiting at the door.
	counted := s.preAuth.leave(c)
	if err != nil {
		s.log.Debug("SSH handshake failed", "remote", remote, "err", err)
		return
	}
	defer sconn.Close()
	if !counted {
		// Displaced by a newcomer in the instant between authenticating
		// and here: it has been closed under us.
		s.log.Debug("SSH connection displaced just as it authenticated", "remote", remote)
		return
	}
	_ = c.raw.SetDeadline(time.Time{})
	nc.active.Store(true)

	service := sconn.User()
	id, err := identityOf(sconn.Permissions)
	if err != nil {
		s.log.Error("SSH connection without identity", "remote", remote, "err", err)
		return
	}
	log := s.log.With("remote", remote, "service", service, "user", id.Username, "user_id", id.UserID, "token_id", id.TokenID, "serial", id.Serial)
	log.Info("SSH connection authenticated")
	c.serial.Store(id.Serial)
	if st, _ := s.revoked.Status(id.Serial); st == revoked.Revoked {
		// Revoked between authentication and here: closeRevoked may
		// have looked before the serial was stored.
		log.Info("closing an SSH connection whose certificate was revoked")
		return
	}

	// Sessions outlive a shutdown signal by the grace period, so their
	// context ends with the connection, not with the server's.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Global requests are port forwarding and keepalives: all declined.
	go ssh.DiscardRequests(reqs)
	var sessions sync.WaitGroup
	for newCh := range chans {
		if newCh.ChannelType() != "session" {
			_ = newCh.Reject(ssh.Prohibited, "this gateway offers sessions only; forwarding is not available")
			continue
		}
		if reason, msg, ok := c.begin(); !ok {
			_ = newCh.Reject(reason, msg)
			continue
		}
		ch, creqs, err := newCh.Accept()
		if err != nil {
			c.end()
			continue
		}
		sessions.Go(func() {
			defer c.end()
			s.session(ctx, log, service, id, ch, creqs)
		})
	}
	cancel()
	sessions.Wait()
	log.Info("SSH connection closed")
}

// closeRevoked closes the connections whose certificates the list now
// revokes; it runs after each refresh that changed the list. Sessions on
// them end with the connection: a revoked certificate keeps nothing open.
func (s *Server) closeRevoked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		serial := c.serial.Load()
		if serial == 0 {
			continue
		}
		if st, _ := s.revoked.Status(serial); st == revoked.Revoked {
			s.log.Info("closing an SSH connection whose certificate was revoked", "remote", c.raw.RemoteAddr().String(), "serial", serial)
			_ = c.raw.Close()
		}
	}
}

// idleConn closes a connection on which nothing moved for idle: each read
// and write pushes its deadline out. Off until the handshake is done, which
// has its own overall deadline.
type idleConn struct {
	net.Conn
	idle   time.Duration
	active atomic.Bool
}

func (c *idleConn) Read(b []byte) (int, error) {
	if c.active.Load() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	if c.active.Load() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Write(b)
}

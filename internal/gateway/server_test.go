package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

const (
	testService = "abcdefg123456-main-bvxea6i--app"
	testClient  = "stepup-gateway"
	testSecret  = "gateway-secret-0123456789abcdef"
	testToken   = "gateway-token"
)

// clock is a settable clock shared by the gateway and the fake CA.
type clock struct {
	mu sync.Mutex
	at time.Time
}

func newClock() *clock { return &clock{at: time.Now()} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.at }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.at = c.at.Add(d)
	c.mu.Unlock()
}

// fakeIssuer plays the three endpoints of the Stepup server the gateway
// uses, with answers the test controls.
type fakeIssuer struct {
	*httptest.Server
	mu          sync.Mutex
	authorities []string
	answers     map[string]access.Answer // "org/user"
	// hold, when set, keeps the access API from answering until it is
	// closed or the request is abandoned.
	hold        chan struct{}
	tokenCalls  atomic.Int32
	accessCalls atomic.Int32
	authCalls   atomic.Int32
	// revoked are the serials GET /ssh/revoked lists; revokedStatus, when
	// set, is its answer instead.
	revoked       []uint64
	revokedStatus int
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{answers: map[string]access.Answer{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ssh/authority", func(w http.ResponseWriter, _ *http.Request) {
		f.authCalls.Add(1)
		f.mu.Lock()
		defer f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"authorities": f.authorities})
	})
	mux.HandleFunc("GET /ssh/revoked", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.revokedStatus != 0 {
			w.WriteHeader(f.revokedStatus)
			return
		}
		list := []map[string]any{}
		for _, serial := range f.revoked {
			list = append(list, map[string]any{"serial": strconv.FormatUint(serial, 10), "token_id": "fam.x", "expires_at": 1})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"version": len(f.revoked), "revoked": list})
	})
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		f.tokenCalls.Add(1)
		if id, secret, _ := r.BasicAuth(); id != testClient || secret != testSecret || r.FormValue("scope") != "access.read" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"` + testToken + `","token_type":"bearer","expires_in":3600}`))
	})
	mux.HandleFunc("GET /api/orgs/{org}/access/{user}", func(w http.ResponseWriter, r *http.Request) {
		f.accessCalls.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		hold := f.hold
		a, ok := f.answers[r.PathValue("org")+"/"+r.PathValue("user")]
		f.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		if !ok {
			a = access.Answer{}
		}
		_ = json.NewEncoder(w).Encode(a)
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// revoke lists serial at GET /ssh/revoked.
func (f *fakeIssuer) revoke(serial uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, serial)
}

// failRevoked makes GET /ssh/revoked answer status (0: the list again).
func (f *fakeIssuer) failRevoked(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokedStatus = status
}

func (f *fakeIssuer) trust(pub ssh.PublicKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authorities = append(f.authorities, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
}

// stall makes the access API hang until the returned function is called.
func (f *fakeIssuer) stall() (release func()) {
	hold := make(chan struct{})
	f.mu.Lock()
	f.hold = hold
	f.mu.Unlock()
	return sync.OnceFunc(func() {
		f.mu.Lock()
		f.hold = nil
		f.mu.Unlock()
		close(hold)
	})
}

func (f *fakeIssuer) answer(org, user string, a access.Answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[org+"/"+user] = a
}

// testCA is a Stepup CA with its key at hand, for certificates Stepup
// would never issue.
type testCA struct {
	*sshca.Authority
	key ssh.Signer
}

func newCA(t *testing.T, clk *clock) testCA {
	t.Helper()
	ks, err := sshca.NewKeySet(clk.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ks.Signer()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := sshca.New(sshca.Config{Domain: "127.0.0.1", Now: clk.Now}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca, signer}
}

// custom signs a certificate for a new key after edit changes it from
// what Stepup issues.
func (ca testCA) custom(t *testing.T, clk *clock, edit func(*ssh.Certificate)) ssh.Signer {
	t.Helper()
	key := userKey(t)
	cert, err := ca.Sign(sshca.Request{
		PublicKey: key.PublicKey(), UserID: "u_alice", Username: "alice", TokenID: "jti",
		TokenExpiry: clk.Now().Add(time.Hour), Claims: sshca.Claims{AMR: []string{"pwd", "otp", "mfa"}, AuthTime: clk.Now().Unix()},
	})
	if err != nil {
		t.Fatal(err)
	}
	edit(cert)
	if err := cert.SignCert(rand.Reader, ca.key); err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// certSigner is a user key with a certificate from ca for the person.
func certSigner(t *testing.T, ca testCA, clk *clock, userID, username string, amr ...string) ssh.Signer {
	t.Helper()
	signer := userKey(t)
	cert, err := ca.Sign(sshca.Request{
		PublicKey: signer.PublicKey(), UserID: userID, Username: username, TokenID: "jti-" + userID,
		TokenExpiry: clk.Now().Add(time.Hour),
		Claims:      sshca.Claims{AMR: amr, AuthTime: clk.Now().Unix(), Grant: "authorization_code"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func userKey(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type testGateway struct {
	Addr  string
	Clock *clock
	srv   *Server
	stop  func()
}

// startGateway runs a Server on a loopback port against f until the test
// ends. mutate may change the config.
func startGateway(t *testing.T, f *fakeIssuer, clk *clock, mutate func(*Config)) *testGateway {
	t.Helper()
	cfg := Config{
		Issuer:       f.URL,
		Services:     map[string]string{testService: "acme"},
		ClientID:     testClient,
		ClientSecret: testSecret,
		GitRoot:      t.TempDir(),
		Now:          clk.Now,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		// Tests move the clock by hours; the list stays young unless a
		// test says otherwise.
		RevocationMaxAge: 24 * time.Hour,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	// Once a connection is served, the first fetch of the authorities is
	// done; a plain key is refused without another.
	if c, err := dial(ln.Addr().String(), "probe", userKey(t)); err == nil {
		c.Close()
		t.Fatal("a plain key was accepted")
	}
	return &testGateway{Addr: ln.Addr().String(), Clock: clk, srv: srv, stop: stop}
}

func dial(addr, user string, signer ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         5 * time.Second,
	})
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs cmd ("" for a shell) in a new session and returns its output
// and exit status.
func run(t *testing.T, c *ssh.Client, cmd string) result {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var out, errOut bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errOut
	if cmd == "" {
		if err = sess.Shell(); err == nil {
			err = sess.Wait()
		}
	} else {
		err = sess.Run(cmd)
	}
	code := 0
	if exit, ok := errors.AsType[*ssh.ExitError](err); ok {
		code = exit.ExitStatus()
	} else if err != nil {
		t.Fatalf("%q: %v", cmd, err)
	}
	return result{out.String(), errOut.String(), code}
}

func mustDial(t *testing.T, addr, user string, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := dial(addr, user, signer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// setup is a fake issuer trusting one CA, with alice an MFA-requiring
// member of acme and bob nobody.
func setup(t *testing.T, mutate func(*Config)) (*fakeIssuer, testCA, *testGateway) {
	clk := newClock()
	f := newFakeIssuer(t)
	ca := newCA(t, clk)
	f.trust(ca.PublicKey())
	f.answer("acme", "u_alice", access.Answer{Member: true, Role: "owner", Requirements: tokens.Requirements{AMR: []string{"mfa"}}})
	return f, ca, startGateway(t, f, clk, mutate)
}

func TestSessions(t *testing.T) {
	f, ca, gw := setup(t, nil)
	clk := gw.Clock
	withMFA := mustDial(t, gw.Addr, testService, certSigner(t, ca, clk, "u_alice", "alice", "pwd", "otp", "mfa"))
	for _, tc := range []struct {
		name string
		cmd  string
		want result
	}{
		{"ok/whoami", "whoami", result{"alice " + testService + "\n", "", 0}},
		{"ok/echo", "echo hello   world", result{"hello world\n", "", 0}},
		{"ok/echo-quoted", "echo 'hello   world'", result{"hello   world\n", "", 0}},
		{"ok/shell", "", result{"Welcome, alice " + testService + ". There is no interactive shell here: use git, or run whoami or echo.\n", "", 0}},
		{"fail/unknown-command", "rm -rf /", result{"", "stepup-gateway: unknown command \"rm\"; this gateway runs whoami, echo, git-upload-pack and git-receive-pack\n", 127}},
		{"fail/unparsable", "echo 'open", result{"", "stepup-gateway: cannot read the command \"echo 'open\": unterminated single quote\n", 127}},
		{"fail/clone-before-push", "git-upload-pack 'repo.git'", result{"", "fatal: " + testService + " has no repository yet; push to it first\n", 128}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(t, withMFA, tc.cmd); got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}

	t.Run("fail/mfa-missing", func(t *testing.T) {
		c := mustDial(t, gw.Addr, testService, certSigner(t, ca, clk, "u_alice", "alice", "pwd"))
		want := result{"", tokens.Requirements{AMR: []string{"mfa"}}.SSHDenied(testService, "alice", "u_alice"), 1}
		if got := run(t, c, "whoami"); got != want {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
		if got := run(t, c, ""); got != want {
			t.Errorf("shell: got %+v\nwant %+v", got, want)
		}
	})
	t.Run("fail/not-a-member", func(t *testing.T) {
		c := mustDial(t, gw.Addr, testService, certSigner(t, ca, clk, "u_bob", "bob", "pwd", "otp", "mfa"))
		want := result{"", tokens.SSHNoAccess(testService, "bob", "u_bob"), 1}
		if got := run(t, c, "whoami"); got != want {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})
	t.Run("fail/unknown-service", func(t *testing.T) {
		c := mustDial(t, gw.Addr, "nosuchservice", certSigner(t, ca, clk, "u_alice", "alice", "pwd", "otp", "mfa"))
		want := result{"", tokens.SSHNoAccess("nosuchservice", "alice", "u_alice"), 1}
		if got := run(t, c, "whoami"); got != want {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})

	// Every allowed session above asked once; answers are reused for a
	// while, and the gateway's own token for longer.
	if n := f.accessCalls.Load(); n != 2 {
		t.Errorf("access API called %d times, want 2 (alice and bob, each cached)", n)
	}
	clk.Advance(access.DefaultTTL + time.Second)
	run(t, withMFA, "whoami")
	if n, tok := f.accessCalls.Load(), f.tokenCalls.Load(); n != 3 || tok != 1 {
		t.Errorf("after the cache expired: %d access calls (want 3), %d token calls (want 1)", n, tok)
	}
}

func TestSessionRequests(t *testing.T) {
	_, ca, gw := setup(t, func(c *Config) { c.MaxSessions = 1 })
	c := mustDial(t, gw.Addr, testService, certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa"))

	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Error("pty request accepted")
	}
	if ok, err := sess.SendRequest("x11-req", true, nil); ok || err != nil {
		t.Errorf("x11 request: ok=%v err=%v", ok, err)
	}
	if err := sess.Setenv("LD_PRELOAD", "/tmp/evil.so"); err == nil {
		t.Error("arbitrary environment accepted")
	}
	if err := sess.Setenv("GIT_PROTOCOL", "version=2"); err != nil {
		t.Errorf("GIT_PROTOCOL refused: %v", err)
	}
	// One session per connection here: a second one is refused while the
	// first is open.
	if _, err := c.NewSession(); err == nil {
		t.Error("second session accepted beyond MaxSessions")
	}
	sess.Close()

	if _, err := c.Dial("tcp", "127.0.0.1:22"); err == nil {
		t.Error("port forwarding accepted")
	}
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Error("remote forwarding accepted")
	}
	// The connection still works after all those refusals.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := c.NewSession()
		if err == nil {
			s.Close()
			break
		}
		// The first session's slot frees when its close is processed.
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func refused(t *testing.T, addr, user string, signer ssh.Signer) {
	t.Helper()
	c, err := dial(addr, user, signer)
	if err == nil {
		c.Close()
		t.Fatal("authentication succeeded")
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("want an authentication failure, got %v", err)
	}
}

func TestAuthentication(t *testing.T) {
	_, ca, gw := setup(t, nil)
	clk := gw.Clock
	for _, tc := range []struct {
		name   string
		signer ssh.Signer
	}{
		{"fail/plain-key", userKey(t)},
		{"fail/foreign-ca", certSigner(t, newCA(t, clk), clk, "u_alice", "alice", "pwd", "otp", "mfa")},
		{"fail/host-certificate", ca.custom(t, clk, func(c *ssh.Certificate) { c.CertType = ssh.HostCert })},
		{"fail/no-principal", ca.custom(t, clk, func(c *ssh.Certificate) { c.ValidPrincipals = nil })},
		{"fail/no-key-id", ca.custom(t, clk, func(c *ssh.Certificate) { c.KeyId = "" })},
		{"fail/expired", ca.custom(t, clk, func(c *ssh.Certificate) { c.ValidBefore = uint64(clk.Now().Unix()) })},
		{"fail/not-yet-valid", ca.custom(t, clk, func(c *ssh.Certificate) { c.ValidAfter = uint64(clk.Now().Add(time.Minute).Unix()) })},
		{"fail/no-token-claims", ca.custom(t, clk, func(c *ssh.Certificate) { delete(c.Extensions, sshca.ClaimsExtension("127.0.0.1")) })},
		{"fail/other-domain", ca.custom(t, clk, func(c *ssh.Certificate) {
			c.Extensions[sshca.ClaimsExtension("evil.example")] = c.Extensions[sshca.ClaimsExtension("127.0.0.1")]
			delete(c.Extensions, sshca.ClaimsExtension("127.0.0.1"))
		})},
		{"fail/unknown-critical-option", ca.custom(t, clk, func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"verify-required": ""} })},
		{"fail/other-source-address", ca.custom(t, clk, func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"source-address": "192.0.2.0/24"} })},
	} {
		t.Run(tc.name, func(t *testing.T) { refused(t, gw.Addr, testService, tc.signer) })
	}
	t.Run("ok/source-address", func(t *testing.T) {
		s := ca.custom(t, clk, func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"source-address": "127.0.0.1/32"} })
		if got := run(t, mustDial(t, gw.Addr, testService, s), "whoami"); got.stdout != "alice "+testService+"\n" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("ok/first-principal-is-the-username", func(t *testing.T) {
		s := ca.custom(t, clk, func(c *ssh.Certificate) { c.ValidPrincipals = []string{"alice", "root"} })
		if got := run(t, mustDial(t, gw.Addr, testService, s), "whoami"); got.stdout != "alice "+testService+"\n" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("fail/expired-by-the-clock", func(t *testing.T) {
		s := certSigner(t, ca, clk, "u_alice", "alice", "pwd", "otp", "mfa")
		clk.Advance(2 * time.Hour)
		defer clk.Advance(-2 * time.Hour)
		refused(t, gw.Addr, testService, s)
	})
}

// TestTrustRotation: a certificate from a CA the gateway has not seen
// makes it ask the server again, but not more than once per
// TrustMinRefetch.
func TestTrustRotation(t *testing.T) {
	f, _, gw := setup(t, func(c *Config) { c.TrustMinRefetch = 5 * time.Second })
	clk := gw.Clock
	const fetches = 1 // the one at start, done before the first connection is served

	rotated := newCA(t, clk)
	f.trust(rotated.PublicKey())
	s := certSigner(t, rotated, clk, "u_alice", "alice", "pwd", "otp", "mfa")
	refused(t, gw.Addr, testService, s) // within 5 s of the fetch at start
	if n := f.authCalls.Load(); n != fetches {
		t.Errorf("fetched the authorities %d times within MinRefetch", n-fetches)
	}
	clk.Advance(6 * time.Second)
	run(t, mustDial(t, gw.Addr, testService, s), "whoami")
	if n := f.authCalls.Load(); n != fetches+1 {
		t.Errorf("fetched the authorities %d times, want 1", n-fetches)
	}
	// Many connections with unknown CAs in a burst: one fetch at most.
	for range 5 {
		refused(t, gw.Addr, testService, certSigner(t, newCA(t, clk), clk, "u_alice", "alice", "pwd"))
	}
	if n := f.authCalls.Load(); n != fetches+1 {
		t.Errorf("a burst of foreign certificates fetched the authorities %d more times", n-fetches-1)
	}
}

func TestAccessUnavailable(t *testing.T) {
	f, ca, gw := setup(t, func(c *Config) { c.DecideTimeout = 500 * time.Millisecond })
	defer f.stall()()
	c := mustDial(t, gw.Addr, testService, certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa"))
	start := time.Now()
	got := run(t, c, "whoami")
	if want := (result{"", "Error: The access service is unavailable; try again shortly.\n", 1}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}

	// A server that is gone altogether: the same, at once.
	f.Close()
	got = run(t, mustDial(t, gw.Addr, testService, certSigner(t, ca, gw.Clock, "u_bob", "bob", "pwd")), "whoami")
	if got.stderr != unavailableText || got.code != 1 {
		t.Errorf("server down: got %+v", got)
	}
}

func TestLimits(t *testing.T) {
	_, ca, gw := setup(t, func(c *Config) {
		c.MaxConns = 2
		// Both may be unauthenticated: otherwise the second would
		// displace the silent one rather than wait for its timeout.
		c.MaxPreAuth = 2
		c.HandshakeTimeout = time.Second
	})
	signer := certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa")

	// A client that connects and says nothing is cut off after the
	// handshake timeout, freeing its slot.
	silent, err := net.Dial("tcp", gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	first := eventually(t, gw.Addr, signer) // once the probe's slot is free
	// The gateway has counted it authenticated (it may do that just after
	// the client has moved on), so the third one below is turned away for
	// want of a slot, not let in in place of the silent one.
	waitPreAuth(t, gw, "127.0.0.1", 1)
	// Both slots are taken: a third connection is closed at once.
	if c, err := dial(gw.Addr, testService, signer); err == nil {
		c.Close()
		t.Fatal("a connection beyond MaxConns was served")
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	buf := make([]byte, 256)
	for {
		if _, err := silent.Read(buf); err != nil {
			break // the gateway's banner, then EOF
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent connection held for %v", d)
	}
	run(t, eventually(t, gw.Addr, signer), "whoami")
	run(t, first, "whoami")
}

// eventually dials until a slot is free.
func eventually(t *testing.T, addr string, signer ssh.Signer) *ssh.Client {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dial(addr, testService, signer)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free connection slot: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGracefulShutdown: stopping closes idle connections at once and lets
// a running session finish.
func TestGracefulShutdown(t *testing.T) {
	f, ca, gw := setup(t, nil)
	release := f.stall() // sessions wait for their access answer
	defer release()
	signer := certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa")
	idle := mustDial(t, gw.Addr, testService, signer)
	busy := mustDial(t, gw.Addr, testService, signer)
	done := make(chan result, 1)
	go func() { done <- run(t, busy, "whoami") }()
	for f.accessCalls.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}

	stopped := make(chan struct{})
	go func() { gw.stop(); close(stopped) }()
	idleClosed := make(chan struct{})
	go func() { _ = idle.Wait(); close(idleClosed) }()
	select {
	case <-idleClosed:
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection still open 5s into the shutdown")
	}
	select {
	case <-stopped:
		t.Fatal("Serve returned while a session was running")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case r := <-done:
		if want := (result{"alice " + testService + "\n", "", 0}); r != want {
			t.Errorf("busy session: %+v, want %+v", r, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("busy session never ended")
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the last session")
	}
}

// TestShutdownGrace: a session still running after the grace period is
// cut off.
func TestShutdownGrace(t *testing.T) {
	f, ca, gw := setup(t, func(c *Config) { c.ShutdownGrace = 200 * time.Millisecond })
	defer f.stall()()
	busy := mustDial(t, gw.Addr, testService, certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa"))
	go func() {
		if s, err := busy.NewSession(); err == nil {
			_ = s.Run("whoami")
		}
	}()
	for f.accessCalls.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	gw.stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with a 200ms grace", d)
	}
}

package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// On Linux the whole of 127.0.0.0/8 is local, so a test can be several
// clients at once.
const (
	flooder = "127.0.0.1"
	other   = "127.0.0.2"
)

// logBuffer collects a gateway's log lines for a test to count.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// capture sends the gateway's log to the test's output and to the
// returned buffer.
func capture(t *testing.T, c *Config) *logBuffer {
	b := &logBuffer{}
	c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), b), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return b
}

const (
	perSourceRefusal = "too many unauthenticated SSH connections from one source"
	globalRefusal    = "too many SSH connections"
	displacement     = "too many unauthenticated SSH connections; closing the longest-waiting one"
)

// tcpFrom opens a TCP connection to addr from the loopback address local,
// closed when the test ends.
func tcpFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sshFrom logs in to addr from the loopback address local.
func sshFrom(local, addr string, signer ssh.Signer) (*ssh.Client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:            testService,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

func mustSSHFrom(t *testing.T, local, addr string, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := sshFrom(local, addr, signer)
	if err != nil {
		t.Fatalf("logging in from %s: %v", local, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// greeted reads what the gateway first sends on c: true for its SSH
// banner, false when it hangs up without one. Ten seconds without either
// fails the test.
func greeted(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case err == nil:
		if !strings.HasPrefix(line, "SSH-2.0-") {
			t.Fatalf("the gateway greeted with %q", line)
		}
		return true
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("the gateway neither greeted nor hung up within 10s")
	}
	return false
}

// hungUp waits until the gateway closes c, reading and dropping whatever
// it sends, and fails the test if that takes more than ten seconds.
func hungUp(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the gateway did not close an unauthenticated connection within 10s")
	}
}

// waitIdle waits until the gateway has no connection open, such as
// startGateway's probe.
func waitIdle(t *testing.T, gw *testGateway) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(gw.srv.slots) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after 5s", len(gw.srv.slots))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPreAuth waits until the gateway counts n unauthenticated
// connections from local: it uncounts one only once it has read the
// client's goodbye, which may be after the client has moved on.
func waitPreAuth(t *testing.T, gw *testGateway, local string, n int) {
	t.Helper()
	src := sourceOf(&net.TCPAddr{IP: net.ParseIP(local)})
	deadline := time.Now().Add(5 * time.Second)
	for gw.srv.preAuth.count(src) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d unauthenticated connections from %s after 5s, want %d", gw.srv.preAuth.count(src), local, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSlots waits until the gateway holds n connection slots: a
// displaced connection's goroutine may still be on its way out.
func waitSlots(t *testing.T, gw *testGateway, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(gw.srv.slots) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connection slots taken after 5s, want %d", len(gw.srv.slots), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPreAuthTotal waits until the gateway counts n unauthenticated
// connections in all; see waitPreAuth.
func waitPreAuthTotal(t *testing.T, gw *testGateway, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for gw.srv.preAuth.total() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d unauthenticated connections after 5s, want %d", gw.srv.preAuth.total(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConfigDefaultsForLimits(t *testing.T) {
	c := Config{}.withDefaults()
	if c.HandshakeTimeout != 10*time.Second || c.MaxPreAuthPerSource != 8 || c.MaxConns != 256 || c.MaxPreAuth != 128 {
		t.Errorf("HandshakeTimeout %v, MaxPreAuthPerSource %d, MaxConns %d, MaxPreAuth %d; want 10s, 8, 256, 128",
			c.HandshakeTimeout, c.MaxPreAuthPerSource, c.MaxConns, c.MaxPreAuth)
	}
	if DefaultMaxPreAuth != DefaultMaxConns/2 {
		t.Errorf("DefaultMaxPreAuth %d, want half of DefaultMaxConns %d", DefaultMaxPreAuth, DefaultMaxConns)
	}
	// Half of MaxConns, whatever that is, but at least one.
	for conns, want := range map[int]int{20: 10, 7: 3, 2: 1, 1: 1} {
		if got := (Config{MaxConns: conns}).withDefaults().MaxPreAuth; got != want {
			t.Errorf("MaxConns %d: MaxPreAuth %d, want %d", conns, got, want)
		}
	}
	base := Config{Issuer: "https://id.example.com", ClientID: "x", ClientSecret: "y", Services: map[string]string{"svc": "acme"}}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.MaxPreAuthPerSource = -1 }, "MaxPreAuthPerSource"},
		{func(c *Config) { c.MaxPreAuth = -1 }, "MaxPreAuth"},
		{func(c *Config) { c.MaxConns, c.MaxPreAuth = 10, 11 }, "MaxPreAuth 11 is more than MaxConns 10"},
	} {
		c := base
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", c, err, tc.want)
		}
	}
	c = base
	c.MaxConns, c.MaxPreAuth = 10, 10 // allowed: nothing reserved, but still displacing
	if err := c.Validate(); err != nil {
		t.Errorf("MaxPreAuth = MaxConns: %v", err)
	}
}

// TestPreAuthDisplaces: once MaxPreAuth connections are waiting, each new
// one takes the place of the oldest of the source with the most waiting,
// or the oldest of all when every source has as many; a source at its own
// limit is refused instead.
func TestPreAuthDisplaces(t *testing.T) {
	p := newPreAuth(3, 5)
	var all []*conn
	mk := func(ip string) *conn {
		c := &conn{source: src4(ip)}
		all = append(all, c)
		return c
	}
	const a, b, c, d, e, f = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"
	enter := func(who *conn) *conn {
		t.Helper()
		victim, ok := p.enter(who)
		if !ok {
			t.Fatalf("%v refused", who.source)
		}
		return victim
	}
	a1, b1, a2, c1, a3 := mk(a), mk(b), mk(a), mk(c), mk(a)
	for _, w := range []*conn{a1, b1, a2, c1, a3} {
		if v := enter(w); v != nil {
			t.Fatalf("%v displaced below the limit", v.source)
		}
	}
	if _, ok := p.enter(mk(a)); ok {
		t.Fatal("a fourth connection from a source with MaxPreAuthPerSource 3 was counted")
	}
	d1, d2, e1 := mk(d), mk(d), mk(e)
	for _, step := range []struct {
		in, want *conn
	}{
		{d1, a1},    // a has 3: its oldest goes
		{d2, a2},    // a still has the most, 2
		{e1, d1},    // d now has 2
		{mk(f), b1}, // one each: the oldest of all
	} {
		if v := enter(step.in); v != step.want {
			t.Errorf("%v came in and displaced %v, want %v", step.in.source, v, step.want.source)
		}
		if n := p.total(); n != 5 {
			t.Errorf("%d waiting, want MaxPreAuth 5", n)
		}
	}
	if p.count(src4(a)) != 1 || p.count(src4(d)) != 1 || p.count(src4(b)) != 0 {
		t.Errorf("counts a %d, d %d, b %d; want 1, 1, 0", p.count(src4(a)), p.count(src4(d)), p.count(src4(b)))
	}
	// A displaced connection is no longer counted when it goes; one that
	// was is, once.
	if p.leave(b1) {
		t.Error("leave counted a displaced connection")
	}
	if !p.leave(a3) || p.leave(a3) {
		t.Error("leave: want true once, then false")
	}
	if n := p.total(); n != 4 {
		t.Errorf("%d waiting after one left, want 4", n)
	}
	for _, w := range all {
		p.leave(w)
	}
	if len(p.in) != 0 || len(p.n) != 0 {
		t.Errorf("after everyone left: %d waiting, %d sources", len(p.in), len(p.n))
	}
}

// TestFloodFromManySources: idle sockets from many addresses, each within
// its own limit but together more than the gateway has connection slots,
// hold no more than MaxPreAuth of them; real clients from elsewhere still
// log in while the flood is held open, and authenticated ones keep their
// share of the slots.
func TestFloodFromManySources(t *testing.T) {
	const maxConns, maxPreAuth = 20, 10 // MaxPreAuth by default
	var logs *logBuffer
	_, ca, gw := setup(t, func(c *Config) {
		logs = capture(t, c)
		c.MaxConns = maxConns
		c.MaxPreAuthPerSource = 3
		// Long enough that the flood is still there at the end.
		c.HandshakeTimeout = time.Minute
	})
	signer := certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa")
	waitIdle(t, gw)

	// 39 addresses with 3 idle sockets each: 117, none over its source's
	// limit, far over MaxConns.
	var flood []net.Conn
	for i := 2; i <= 40; i++ {
		for range 3 {
			flood = append(flood, tcpFrom(t, fmt.Sprintf("127.0.0.%d", i), gw.Addr))
		}
	}
	// The gateway answers (its banner, or hanging up) only once it has
	// accepted a connection: after this it has seen them all.
	for _, c := range flood {
		greeted(t, c)
	}
	if n := gw.srv.preAuth.total(); n != maxPreAuth {
		t.Errorf("%d unauthenticated connections held, want MaxPreAuth = %d", n, maxPreAuth)
	}
	waitSlots(t, gw, maxPreAuth)

	// Someone from yet another address logs in while the flood is held.
	alice := mustSSHFrom(t, "127.0.0.41", gw.Addr, signer)
	if got := run(t, alice, "whoami"); got != (result{"alice " + testService + "\n", "", 0}) {
		t.Errorf("whoami from 127.0.0.41: %+v", got)
	}
	// It displaced one of the flood and then stopped counting.
	waitPreAuthTotal(t, gw, maxPreAuth-1)

	// The flood tops itself up before each login, and still the other
	// MaxConns-MaxPreAuth slots fill with authenticated connections.
	for i := range maxConns - maxPreAuth - 1 {
		if !greeted(t, tcpFrom(t, fmt.Sprintf("127.0.1.%d", i+1), gw.Addr)) {
			t.Fatal("an idle connection was refused below MaxPreAuth")
		}
		if n := gw.srv.preAuth.total(); n != maxPreAuth {
			t.Fatalf("%d unauthenticated connections after topping up, want %d", n, maxPreAuth)
		}
		c := mustSSHFrom(t, fmt.Sprintf("127.0.2.%d", i+1), gw.Addr, signer)
		if got := run(t, c, "whoami"); got.code != 0 {
			t.Errorf("whoami from 127.0.2.%d: %+v", i+1, got)
		}
		waitPreAuthTotal(t, gw, maxPreAuth-1)
	}
	// Ten logged in, nine of the flood waiting.
	waitSlots(t, gw, maxConns-1)
	if got := run(t, alice, "whoami"); got.code != 0 {
		t.Errorf("the first login's second whoami: %+v", got)
	}

	// Over a hundred displaced, one line; nothing refused.
	if n := logs.count(displacement); n != 1 {
		t.Errorf("the displacement logged %d times, want once", n)
	}
	if n := logs.count(globalRefusal+";") + logs.count(perSourceRefusal); n != 0 {
		t.Errorf("%d refusals logged, want none", n)
	}
}

// TestFloodFromOneSource: idle sockets from one address, more than it may
// have unauthenticated, take only its share of the connection slots; the
// rest are closed at once, and people elsewhere still get in.
func TestFloodFromOneSource(t *testing.T) {
	var logs *logBuffer
	_, ca, gw := setup(t, func(c *Config) {
		logs = capture(t, c)
		c.MaxConns = 6
		c.MaxPreAuthPerSource = 3
		// Long enough that the flood is still there at the end.
		c.HandshakeTimeout = time.Minute
	})
	signer := certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa")
	waitIdle(t, gw) // startGateway's probe has gone

	flood := make([]net.Conn, 10)
	for i := range flood {
		flood[i] = tcpFrom(t, flooder, gw.Addr)
	}
	served := 0
	for _, c := range flood {
		if greeted(t, c) {
			served++
		}
	}
	if served != 3 {
		t.Errorf("%d of %d idle connections from %s are served, want MaxPreAuthPerSource = 3", served, len(flood), flooder)
	}

	// The flooding source is refused even with a good certificate...
	if c, err := sshFrom(flooder, gw.Addr, signer); err == nil {
		c.Close()
		t.Error("a fourth unauthenticated connection from the flooding source was served")
	}
	// ...while another address has every slot the flood did not take:
	// MaxConns 6, less the flood's 3.
	for range 3 {
		c := mustSSHFrom(t, other, gw.Addr, signer)
		if got := run(t, c, "whoami"); got != (result{"alice " + testService + "\n", "", 0}) {
			t.Errorf("whoami from %s: %+v", other, got)
		}
	}

	// Eight refusals, one line; the connection slots never ran out.
	if n := logs.count(perSourceRefusal); n != 1 {
		t.Errorf("the per-source refusal logged %d times, want once", n)
	}
	if n := logs.count(globalRefusal + ";"); n != 0 {
		t.Errorf("the global refusal logged %d times, want none", n)
	}
}

// TestAuthenticatedLeavePreAuth: connections that have authenticated no
// longer count against their source's limit.
func TestAuthenticatedLeavePreAuth(t *testing.T) {
	_, ca, gw := setup(t, func(c *Config) {
		c.MaxPreAuthPerSource = 2
		c.HandshakeTimeout = time.Minute
	})
	signer := certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa")
	waitPreAuth(t, gw, flooder, 0)

	var logged []*ssh.Client
	for range 4 {
		logged = append(logged, mustSSHFrom(t, flooder, gw.Addr, signer))
	}
	waitPreAuth(t, gw, flooder, 0)
	// With four logged in, the address still has both its
	// unauthenticated places, and no more.
	if !greeted(t, tcpFrom(t, flooder, gw.Addr)) || !greeted(t, tcpFrom(t, flooder, gw.Addr)) {
		t.Fatal("an idle connection was refused beside authenticated ones")
	}
	if greeted(t, tcpFrom(t, flooder, gw.Addr)) {
		t.Error("a third unauthenticated connection was served with MaxPreAuthPerSource 2")
	}
	for _, c := range logged {
		if got := run(t, c, "whoami"); got.code != 0 {
			t.Errorf("whoami: %+v", got)
		}
	}
}

// TestHandshakeTimeout: the gateway closes connections that have not
// authenticated within HandshakeTimeout, however they keep busy, and
// their source may connect again.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, ca, gw := setup(t, func(c *Config) {
		c.MaxPreAuthPerSource = 3
		c.HandshakeTimeout = timeout
	})
	waitPreAuth(t, gw, flooder, 0)

	start := time.Now()
	silent := []net.Conn{tcpFrom(t, flooder, gw.Addr), tcpFrom(t, flooder, gw.Addr)}
	// A client that sends its banner and then a packet a byte at a time,
	// never finishing it: each byte is progress, but the deadline stands.
	trickler := tcpFrom(t, flooder, gw.Addr)
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		if _, err := trickler.Write([]byte("SSH-2.0-trickler\r\n\x00\x00\x10\x00")); err != nil {
			return
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
				if _, err := trickler.Write([]byte{0}); err != nil {
					return // the gateway hung up
				}
			}
		}
	}()
	for _, c := range append(silent, trickler) {
		hungUp(t, c)
	}
	close(stopTrickle)
	<-trickled
	// A deadline cannot fire early; this only guards against a gateway
	// that hangs up on everyone at once.
	if d := time.Since(start); d < timeout {
		t.Errorf("closed after %v, before the %v timeout", d, timeout)
	}

	waitPreAuth(t, gw, flooder, 0)
	c := mustSSHFrom(t, flooder, gw.Addr, certSigner(t, ca, gw.Clock, "u_alice", "alice", "pwd", "otp", "mfa"))
	if got := run(t, c, "whoami"); got.code != 0 {
		t.Errorf("whoami after the timeouts: %+v", got)
	}
}

func TestSourceOf(t *testing.T) {
	src := func(ip string) source { return sourceOf(&net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}) }
	same := [][2]string{
		{"192.0.2.1", "::ffff:192.0.2.1"}, // a dual-stack listener's view of IPv4
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
	}
	for _, p := range same {
		if a, b := src(p[0]), src(p[1]); a != b {
			t.Errorf("%s is %v but %s is %v; want one source", p[0], a, p[1], b)
		}
	}
	differ := [][2]string{
		{"127.0.0.1", "127.0.0.2"},
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "2001:db8::1"},
	}
	for _, p := range differ {
		if a, b := src(p[0]), src(p[1]); a == b {
			t.Errorf("%s and %s are both %v; want two sources", p[0], p[1], a)
		}
	}
	if got := src("192.0.2.1").String(); got != "192.0.2.1/32" {
		t.Errorf("IPv4 source %s", got)
	}
	if got := src("2001:db8:1:2::1").String(); got != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 source %s", got)
	}
}

// TestRefusalLog: the first refusal is logged at once; the rest of a
// flood is summed up once a period; after a quiet period the next
// refusal is logged at once again. The periods are ended by hand here.
func TestRefusalLog(t *testing.T) {
	var logs logBuffer
	r := newRefusalLog(slog.New(slog.NewTextHandler(&logs, nil)), time.Hour, "refused a thing", "max", 3)
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1234} }

	r.refused(addr("192.0.2.1"), src4("192.0.2.1"))
	if n := logs.count("remote=192.0.2.1:1234"); n != 1 {
		t.Fatalf("first refusal logged %d times", n)
	}
	for _, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		r.refused(addr(ip), src4(ip))
	}
	if n := logs.count("refused a thing"); n != 1 {
		t.Errorf("%d lines for five refusals within a period, want 1", n)
	}
	r.summarize()
	if n := logs.count("refused=4 sources=3 period=1h0m0s max=3"); n != 1 {
		t.Errorf("no summary of the period:\n%s", logs.buf.String())
	}
	r.summarize() // a period without refusals
	r.refused(addr("192.0.2.9"), src4("192.0.2.9"))
	if n := logs.count("remote=192.0.2.9:1234"); n != 1 {
		t.Errorf("a refusal after a quiet period logged %d times, want at once", n)
	}
	r.refused(addr("192.0.2.9"), src4("192.0.2.9"))
	r.close()
	if n := logs.count("refused=1 sources=1"); n != 1 {
		t.Errorf("close did not report the refusal still unreported:\n%s", logs.buf.String())
	}
	r.refused(addr("192.0.2.9"), src4("192.0.2.9")) // after close: ignored
	if n := logs.count("refused a thing"); n != 4 {
		t.Errorf("%d lines in all, want 4:\n%s", n, logs.buf.String())
	}

	// The period ends by itself.
	short := newRefusalLog(slog.New(slog.DiscardHandler), 10*time.Millisecond, "refused a thing")
	short.refused(addr("192.0.2.1"), src4("192.0.2.1"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		short.mu.Lock()
		quiet := short.quiet
		short.mu.Unlock()
		if quiet == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the quiet period did not end within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	short.close()
}

func src4(ip string) source { return sourceOf(&net.TCPAddr{IP: net.ParseIP(ip)}) }

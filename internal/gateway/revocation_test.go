package gateway

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// dialBanner dials as dial does and also returns the authentication
// banner the gateway sent, if any.
func dialBanner(addr, user string, signer ssh.Signer) (*ssh.Client, string, error) {
	var (
		mu     sync.Mutex
		banner strings.Builder
	)
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback: func(msg string) error {
			mu.Lock()
			defer mu.Unlock()
			banner.WriteString(msg)
			return nil
		},
		Timeout: 5 * time.Second,
	})
	mu.Lock()
	defer mu.Unlock()
	return c, banner.String(), err
}

// waitFor polls cond every refresh interval until it holds, for at most
// 100 intervals (and at least 10 s on a slow machine).
func waitFor(t *testing.T, every time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(max(100*every, 10*time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, max(100*every, 10*time.Second))
		}
		time.Sleep(every)
	}
}

func serialOf(s ssh.Signer) uint64 { return s.PublicKey().(*ssh.Certificate).Serial }

// TestRevokedCertificate: a certificate the server revokes is refused at
// authentication within the refresh interval, with the reason in the
// banner; a connection it already opened is closed; others go on.
func TestRevokedCertificate(t *testing.T) {
	const every = 20 * time.Millisecond
	f, ca, gw := setup(t, func(c *Config) { c.RevocationRefresh = every })
	clk := gw.Clock
	alice := certSigner(t, ca, clk, "u_alice", "alice", "pwd", "otp", "mfa")
	other := certSigner(t, ca, clk, "u_alice", "alice", "pwd", "otp", "mfa")
	open := mustDial(t, gw.Addr, testService, alice)
	if got := run(t, open, "whoami"); got.code != 0 {
		t.Fatalf("before revocation: %+v", got)
	}
	closed := make(chan error, 1)
	go func() { closed <- open.Wait() }()

	f.revoke(serialOf(alice))
	var banner string
	waitFor(t, every, "the revoked certificate refused", func() bool {
		c, b, err := dialBanner(gw.Addr, testService, alice)
		if err == nil {
			c.Close()
			return false
		}
		banner = b
		return true
	})
	want := "Error: This SSH certificate has been revoked.\nService: " + testService + "\nUser: alice (u_alice)\nDetail: Log in again for a new certificate: stepup login\n"
	if banner != want {
		t.Errorf("banner:\n%q\nwant:\n%q", banner, want)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("the connection the revoked certificate opened is still open")
	}
	if got := run(t, mustDial(t, gw.Addr, testService, other), "whoami"); got.code != 0 {
		t.Errorf("another certificate of the same person: %+v", got)
	}
}

// TestRevocationListStale: while the list cannot be fetched it stays in
// force for RevocationMaxAge; past that the gateway admits no one, saying
// so, and once the list is back it admits again.
func TestRevocationListStale(t *testing.T) {
	const every = 20 * time.Millisecond
	f, ca, gw := setup(t, func(c *Config) { c.RevocationRefresh, c.RevocationMaxAge = every, time.Minute })
	clk := gw.Clock
	alice := certSigner(t, ca, clk, "u_alice", "alice", "pwd", "otp", "mfa")
	open := mustDial(t, gw.Addr, testService, alice)

	f.failRevoked(http.StatusServiceUnavailable)
	// Within the bound: in.
	if got := run(t, mustDial(t, gw.Addr, testService, alice), "whoami"); got.code != 0 {
		t.Fatalf("a failing list within its bound: %+v", got)
	}
	clk.Advance(2 * time.Minute)
	var banner string
	waitFor(t, every, "new connections refused once the list is too old", func() bool {
		c, b, err := dialBanner(gw.Addr, testService, alice)
		if err == nil {
			c.Close()
			return false
		}
		banner = b
		return true
	})
	if banner != staleListText {
		t.Errorf("banner %q, want %q", banner, staleListText)
	}
	// A connection made before gets the same words for a new session.
	if got := run(t, open, "whoami"); got.code != 1 || got.stderr != staleListText {
		t.Errorf("a new session on an open connection: %+v", got)
	}
	f.failRevoked(0)
	waitFor(t, every, "admitted again once the list is back", func() bool {
		c, _, err := dialBanner(gw.Addr, testService, alice)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

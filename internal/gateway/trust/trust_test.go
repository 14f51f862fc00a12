package trust

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func line(k ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) }

// server publishes whatever list the test sets, or fails with status.
type server struct {
	mu     sync.Mutex
	list   []string
	status int
	calls  atomic.Int32
}

func (s *server) set(status int, list ...string) {
	s.mu.Lock()
	s.status, s.list = status, list
	s.mu.Unlock()
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path != "/ssh/authority" {
		http.NotFound(w, r)
		return
	}
	if s.status != http.StatusOK {
		w.WriteHeader(s.status)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"authorities": s.list})
}

type clock struct {
	mu sync.Mutex
	at time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.at }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.at = c.at.Add(d)
	c.mu.Unlock()
}

func newCache(t *testing.T, srv *server, clk *clock) *Cache {
	t.Helper()
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c, err := New(Config{Issuer: hs.URL + "/", Now: clk.Now, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRefresh(t *testing.T) {
	a, b, cert := newKey(t), newKey(t), newKey(t)
	srv := &server{}
	clk := &clock{at: time.Now()}
	c := newCache(t, srv, clk)
	ctx := context.Background()

	// A damaged line and a certificate are skipped; the rest is trusted.
	signer, _ := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(make([]byte, 32)))
	crt := &ssh.Certificate{Key: cert, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
	if err := crt.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	srv.set(http.StatusOK, line(a), "ssh-ed25519 AAAAdamaged", line(crt))
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.known(a) || c.known(b) || c.known(crt) || c.Len() != 1 {
		t.Fatalf("after the first fetch: a %v, b %v, cert %v, len %d", c.known(a), c.known(b), c.known(crt), c.Len())
	}

	// A failing server or a list of nothing usable keeps what we had.
	for _, fail := range []func(){
		func() { srv.set(http.StatusInternalServerError) },
		func() { srv.set(http.StatusOK, "garbage") },
	} {
		fail()
		if err := c.Refresh(ctx); err == nil {
			t.Error("Refresh succeeded")
		}
		if !c.known(a) {
			t.Error("a failed refresh dropped the trusted key")
		}
	}

	// Rotation replaces the set.
	srv.set(http.StatusOK, line(b))
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.known(a) || !c.known(b) {
		t.Error("the new list did not replace the old one")
	}
}

func TestUnknownKeyRefetchIsRateLimited(t *testing.T) {
	a, b, d := newKey(t), newKey(t), newKey(t)
	srv := &server{}
	srv.set(http.StatusOK, line(a))
	clk := &clock{at: time.Now()}
	c := newCache(t, srv, clk)
	if !c.IsUserAuthority(a) {
		t.Fatal("the first look-up did not fetch the list")
	}
	srv.set(http.StatusOK, line(a), line(b))
	if c.IsUserAuthority(b) || c.IsUserAuthority(d) {
		t.Fatal("refetched within MinRefetch")
	}
	clk.Advance(DefaultMinRefetch)
	if !c.IsUserAuthority(b) {
		t.Fatal("a new CA was not picked up after MinRefetch")
	}
	if c.IsUserAuthority(d) {
		t.Fatal("an unlisted key was trusted")
	}
	if n := srv.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	// Known keys never cost a fetch.
	for range 10 {
		c.IsUserAuthority(a)
	}
	if n := srv.calls.Load(); n != 2 {
		t.Errorf("%d fetches after known look-ups, want 2", n)
	}
}

func TestRunRefreshes(t *testing.T) {
	a := newKey(t)
	srv := &server{}
	srv.set(http.StatusOK)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c, err := New(Config{Issuer: hs.URL, RefreshEvery: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	srv.set(http.StatusOK, line(a))
	deadline := time.Now().Add(5 * time.Second)
	for !c.known(a) {
		if time.Now().After(deadline) {
			t.Fatal("Run never picked up the new authority")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

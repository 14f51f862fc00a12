package revoked

import (
	"context"
	"errors"
	"fmt"
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

// server publishes the serials the test sets, with an ETag per version,
// or fails with status.
type server struct {
	mu       sync.Mutex
	serials  []string
	version  int
	status   int
	calls    atomic.Int32
	notModif atomic.Int32
}

func (s *server) set(serials ...string) {
	s.mu.Lock()
	s.serials, s.status = serials, 0
	s.version++
	s.mu.Unlock()
}

func (s *server) fail(status int) {
	s.mu.Lock()
	s.status = status
	s.mu.Unlock()
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path != "/ssh/revoked" {
		http.NotFound(w, r)
		return
	}
	if s.status != 0 {
		w.WriteHeader(s.status)
		return
	}
	tag := fmt.Sprintf(`"%d"`, s.version)
	w.Header().Set("ETag", tag)
	if r.Header.Get("If-None-Match") == tag {
		s.notModif.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	var entries []string
	for _, serial := range s.serials {
		entries = append(entries, `{"serial":"`+serial+`","token_id":"fam.x","expires_at":1}`)
	}
	fmt.Fprintf(w, `{"version":%d,"revoked":[%s]}`, s.version, strings.Join(entries, ","))
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newCache(t *testing.T, s *server, clk *clock) *Cache {
	t.Helper()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	c, err := New(Config{Issuer: hs.URL, RefreshEvery: 5 * time.Second, MaxAge: 30 * time.Second, Now: clk.Now,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStatus(t *testing.T) {
	s := &server{}
	s.set("17", "18446744073709551615")
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := newCache(t, s, clk)
	ctx := context.Background()

	// Before the first fetch nothing is known: fail closed.
	if st, err := c.Status(99); st != Unknown || err == nil {
		t.Fatalf("before any fetch: %v %v, want Unknown with a reason", st, err)
	}
	if !c.IsRevoked(&ssh.Certificate{Serial: 99}) {
		t.Error("IsRevoked is false before any fetch")
	}
	if changed, err := c.Refresh(ctx); err != nil || !changed {
		t.Fatalf("first refresh: changed %v, %v", changed, err)
	}
	for _, tc := range []struct {
		name   string
		serial uint64
		want   Status
	}{
		{"fail/listed", 17, Revoked},
		{"fail/listed-largest", 1<<64 - 1, Revoked},
		{"ok/not-listed", 99, Good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, err := c.Status(tc.serial); st != tc.want || err != nil {
				t.Errorf("Status(%d) = %v, %v; want %v", tc.serial, st, err, tc.want)
			}
			if got := c.IsRevoked(&ssh.Certificate{Serial: tc.serial}); got != (tc.want != Good) {
				t.Errorf("IsRevoked(%d) = %v", tc.serial, got)
			}
		})
	}

	t.Run("ok/not-modified", func(t *testing.T) {
		clk.Advance(20 * time.Second)
		if changed, err := c.Refresh(ctx); err != nil || changed || s.notModif.Load() != 1 {
			t.Fatalf("unchanged list: changed %v, %v, %d answers 304", changed, err, s.notModif.Load())
		}
		// A 304 counts as a fetch: the list is as young as it.
		clk.Advance(20 * time.Second)
		if st, err := c.Status(99); st != Good {
			t.Errorf("20 s after a 304: %v %v", st, err)
		}
	})

	t.Run("ok/change", func(t *testing.T) {
		s.set("99")
		if changed, err := c.Refresh(ctx); err != nil || !changed {
			t.Fatalf("changed list: changed %v, %v", changed, err)
		}
		if st, _ := c.Status(99); st != Revoked {
			t.Error("a newly listed serial is not revoked")
		}
		if st, _ := c.Status(17); st != Good {
			t.Error("a serial no longer listed (expired) is still revoked")
		}
	})

	t.Run("fail/stale", func(t *testing.T) {
		s.fail(http.StatusServiceUnavailable)
		if _, err := c.Refresh(ctx); err == nil {
			t.Fatal("a 503 refreshed the list")
		}
		// The list held stays in force while young enough ...
		clk.Advance(30 * time.Second)
		if st, err := c.Status(1); st != Good || c.Stale() != nil {
			t.Fatalf("within MaxAge of the last fetch: %v %v", st, err)
		}
		if st, _ := c.Status(99); st != Revoked {
			t.Fatal("the held list forgot a revoked serial")
		}
		// ... and then nothing is admitted, with the reason.
		clk.Advance(time.Second)
		st, err := c.Status(1)
		var stale *StaleError
		if st != Unknown || !errors.As(err, &stale) || stale.Age != 31*time.Second || !strings.Contains(err.Error(), "503") {
			t.Fatalf("past MaxAge: %v %v", st, err)
		}
		if st, _ := c.Status(99); st != Revoked {
			t.Error("a revoked serial is Unknown rather than Revoked")
		}
		s.set("99")
		if _, err := c.Refresh(ctx); err != nil || c.Stale() != nil {
			t.Fatalf("after the server is back: %v, stale %v", err, c.Stale())
		}
	})
}

func TestDamagedListRefused(t *testing.T) {
	for _, body := range []string{`{"version": 1}`, `{"revoked":[{"serial":"12x"}]}`, `not json`, `{"revoked":[{"serial":18446744073709551615}]}`} {
		t.Run(body, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }))
			defer hs.Close()
			c, err := New(Config{Issuer: hs.URL})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Refresh(context.Background()); err == nil {
				t.Fatal("a damaged list was taken")
			}
			if st, _ := c.Status(1); st != Unknown {
				t.Errorf("after a damaged first list: %v", st)
			}
		})
	}
}

func TestRunReportsChanges(t *testing.T) {
	s := &server{}
	s.set()
	hs := httptest.NewServer(s)
	defer hs.Close()
	c, err := New(Config{Issuer: hs.URL, RefreshEvery: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan struct{}, 10)
	go c.Run(ctx, func() { changes <- struct{}{} })
	deadline := time.After(10 * time.Second)
	select {
	case <-changes: // the first list
	case <-deadline:
		t.Fatal("Run reported no first list within 10 s")
	}
	s.set("5")
	for {
		select {
		case <-changes:
		case <-deadline:
			t.Fatal("Run reported no change within 10 s")
		}
		if st, _ := c.Status(5); st == Revoked {
			return
		}
	}
}

func TestConfigRefused(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no issuer accepted")
	}
	if _, err := New(Config{Issuer: "http://127.0.0.1:1", RefreshEvery: time.Minute, MaxAge: time.Second}); err == nil {
		t.Error("a MaxAge below the refresh interval accepted")
	}
}

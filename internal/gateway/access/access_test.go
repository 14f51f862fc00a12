package access

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

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

// server is a fake Stepup server: a token endpoint and the access API.
type server struct {
	*httptest.Server
	tokens   atomic.Int32 // tokens issued; the current one is "tok<N>"
	valid    atomic.Int32 // which token the API accepts; 0: the latest
	calls    atomic.Int32
	mu       sync.Mutex
	status   int
	body     string
	rawPaths []string
}

func newServer(t *testing.T) *server {
	s := &server{status: http.StatusOK, body: `{"member": true, "role": "owner", "requirements": {"amr": ["mfa"], "max_age": 300}}`}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		if id, secret, _ := r.BasicAuth(); id != "gw" || secret != "s3cret" || r.FormValue("grant_type") != "client_credentials" || r.FormValue("scope") != Scope {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		n := s.tokens.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok` + string(rune('0'+n)) + `","token_type":"bearer","expires_in":3600}`))
	})
	mux.HandleFunc("GET /api/orgs/{org}/access/{user}", func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		want := s.tokens.Load()
		if v := s.valid.Load(); v != 0 {
			want = v
		}
		if r.Header.Get("Authorization") != "Bearer tok"+string(rune('0'+want)) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_token"}`))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.rawPaths = append(s.rawPaths, r.URL.EscapedPath())
		w.WriteHeader(s.status)
		_, _ = w.Write([]byte(s.body))
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *server) answer(status int, body string) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

func newClient(t *testing.T, s *server, clk *clock, secret string) *Client {
	t.Helper()
	c, err := New(Config{Issuer: s.URL, ClientID: "gw", ClientSecret: secret, Now: clk.Now, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLookupCaches(t *testing.T) {
	s := newServer(t)
	clk := &clock{at: time.Now()}
	c := newClient(t, s, clk, "s3cret")
	ctx := context.Background()

	a, err := c.Lookup(ctx, "acme", "u_alice")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Member || a.Role != "owner" || !slices.Equal(a.Requirements.AMR, []string{"mfa"}) || a.Requirements.MaxAge == nil || *a.Requirements.MaxAge != 300 {
		t.Fatalf("answer = %+v", a)
	}
	for range 3 {
		if _, err := c.Lookup(ctx, "acme", "u_alice"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Lookup(ctx, "acme", "u_bob"); err != nil {
		t.Fatal(err)
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("%d API calls for two people, want 2", n)
	}
	clk.Advance(DefaultTTL)
	if _, err := c.Lookup(ctx, "acme", "u_alice"); err != nil {
		t.Fatal(err)
	}
	if n, tok := s.calls.Load(), s.tokens.Load(); n != 3 || tok != 1 {
		t.Errorf("after the TTL: %d API calls (want 3), %d tokens (want 1)", n, tok)
	}
}

func TestLookupAnswers(t *testing.T) {
	ctx := context.Background()
	clk := &clock{at: time.Now()}
	t.Run("ok/non-member-grants-nothing", func(t *testing.T) {
		s := newServer(t)
		s.answer(http.StatusOK, `{"member": false, "role": "owner", "requirements": {"amr": []}}`)
		a, err := newClient(t, s, clk, "s3cret").Lookup(ctx, "acme", "u_bob")
		if err != nil || a.Member || a.Role != "" {
			t.Fatalf("got %+v, %v", a, err)
		}
	})
	t.Run("ok/ids-are-escaped", func(t *testing.T) {
		s := newServer(t)
		if _, err := newClient(t, s, clk, "s3cret").Lookup(ctx, "ac/me", "u ?x"); err != nil {
			t.Fatal(err)
		}
		if want := "/api/orgs/ac%2Fme/access/u%20%3Fx"; !slices.Equal(s.rawPaths, []string{want}) {
			t.Errorf("paths %q, want %q", s.rawPaths, want)
		}
	})
	t.Run("ok/new-token-after-401", func(t *testing.T) {
		s := newServer(t)
		c := newClient(t, s, clk, "s3cret")
		if _, err := c.Lookup(ctx, "acme", "u_alice"); err != nil {
			t.Fatal(err)
		}
		// The server forgets our token (a restart, say): one retry with a
		// fresh token, not an outage.
		s.valid.Store(2)
		if _, err := c.Lookup(ctx, "acme", "u_bob"); err != nil {
			t.Fatal(err)
		}
		if n := s.tokens.Load(); n != 2 {
			t.Errorf("%d tokens, want 2", n)
		}
	})
	for _, tc := range []struct {
		name, secret string
		status       int
		body, says   string
	}{
		{"fail/bad-credentials", "wrong", http.StatusOK, `{"member": true}`, `client "gw"`},
		{"fail/server-error", "s3cret", http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`, "503"},
		{"fail/forbidden", "s3cret", http.StatusForbidden, `{"error":"insufficient_scope"}`, "insufficient_scope"},
		{"fail/not-json", "s3cret", http.StatusOK, `<html>`, "not an access answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			s.answer(tc.status, tc.body)
			_, err := newClient(t, s, clk, tc.secret).Lookup(ctx, "acme", "u_alice")
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.says)
			}
		})
	}
	t.Run("fail/unreachable", func(t *testing.T) {
		s := newServer(t)
		c := newClient(t, s, clk, "s3cret")
		s.Close()
		if _, err := c.Lookup(ctx, "acme", "u_alice"); err == nil {
			t.Fatal("no error from a closed server")
		}
	})
	t.Run("fail/errors-are-not-cached", func(t *testing.T) {
		s := newServer(t)
		c := newClient(t, s, clk, "s3cret")
		s.answer(http.StatusBadGateway, "")
		if _, err := c.Lookup(ctx, "acme", "u_alice"); err == nil {
			t.Fatal("no error")
		}
		s.answer(http.StatusOK, `{"member": true, "role": "member", "requirements": {"amr": []}}`)
		if a, err := c.Lookup(ctx, "acme", "u_alice"); err != nil || !a.Member {
			t.Fatalf("after recovery: %+v, %v", a, err)
		}
	})
}

func TestNewNeedsCredentials(t *testing.T) {
	if _, err := New(Config{Issuer: "http://127.0.0.1:1"}); err == nil {
		t.Error("no error without client credentials")
	}
	if _, err := New(Config{ClientID: "a", ClientSecret: "b"}); err == nil {
		t.Error("no error without an issuer")
	}
}

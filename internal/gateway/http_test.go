package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/tokens"
)

// apiTest is the HTTP API of a gateway whose issuer publishes keys the test
// signs with, and whose access answers come from a fake.
type apiTest struct {
	server  *Server
	handler http.Handler
	issuer  string
	signer  *tokens.Signer
	lookup  *fakeLookup
	clock   *clock
}

func newAPITest(t *testing.T, edit func(*Config)) *apiTest {
	t.Helper()
	clk := newClock()
	ks, err := tokens.NewKeySet([]string{tokens.ES256}, clk.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ks.Signer(tokens.ES256)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(ks.PublicJWKS(clk.Now()))
	}))
	t.Cleanup(jwks.Close)
	cfg := Config{
		Issuer: jwks.URL, Services: map[string]string{testService: "acme"},
		ClientID: testClient, ClientSecret: testSecret, GitRoot: t.TempDir(),
		Now: clk.Now, Logger: slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &apiTest{server: s, issuer: jwks.URL, signer: signer, lookup: &fakeLookup{answers: map[string]access.Answer{}}, clock: clk}
	a.use(t, a.lookup)
	return a
}

// use makes the API take its access answers from l.
func (a *apiTest) use(t *testing.T, l AccessLookup) {
	t.Helper()
	a.server.access = l
	h, err := a.server.HTTPHandler()
	if err != nil {
		t.Fatal(err)
	}
	a.handler = h
}

// token is an access token for user with amr, authenticated authAgo ago.
func (a *apiTest) token(t *testing.T, user string, amr []string, authAgo time.Duration) string {
	t.Helper()
	now := a.clock.Now()
	tok, err := a.signer.SignJSON(tokens.AccessClaims{
		Issuer: a.issuer, Subject: user, Audience: []string{a.issuer},
		Expiry: now.Add(time.Hour).Unix(), IssuedAt: now.Unix(), ID: "fam.0123456789ab",
		ClientID: "stepup-cli", Scope: []string{"openid"}, AMR: amr, AuthTime: now.Add(-authAgo).Unix(),
		Grant: "authorization_code",
	}, tokens.TypAccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (a *apiTest) get(t *testing.T, method, path, token string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	a.handler.ServeHTTP(rec, req)
	return rec
}

func TestHTTPProjects(t *testing.T) {
	a := newAPITest(t, nil)
	fiveMinutes := int64(300)
	mfa := access.Answer{Member: true, Role: "owner", Requirements: tokens.Requirements{AMR: []string{"mfa"}}}
	fresh := access.Answer{Member: true, Role: "member", Requirements: tokens.Requirements{AMR: []string{}, MaxAge: &fiveMinutes}}
	const (
		notFoundBody = `{"error":"not_found","error_description":"The service doesn't exist or you do not have access to it."}`
		mfaHeader    = `Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", amr="mfa"`
		mfaBody      = `{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: Multi-factor authentication (MFA)","amr":["mfa"]}`
	)
	pwd, withMFA := []string{"pwd"}, []string{"mfa", "otp", "pwd"}

	for _, tc := range []struct {
		name      string
		method    string
		user      string // default u_alice
		service   string
		answer    access.Answer
		err       error
		token     string
		status    int
		challenge string // WWW-Authenticate
		body      string // "" when not checked
		asked     bool
	}{
		{name: "ok/mfa-present", service: testService, answer: mfa, token: a.token(t, "u_alice", withMFA, time.Hour),
			status: http.StatusOK, body: `{"service":"` + testService + `","org":"acme"}`, asked: true},
		{name: "ok/nothing-required", service: testService, answer: access.Answer{Member: true, Role: "member"}, token: a.token(t, "u_alice", pwd, time.Hour),
			status: http.StatusOK, body: `{"service":"` + testService + `","org":"acme"}`, asked: true},
		{name: "ok/fresh-enough", service: testService, answer: fresh, token: a.token(t, "u_alice", pwd, time.Minute),
			status: http.StatusOK, asked: true},
		{name: "fail/mfa-missing", service: testService, answer: mfa, token: a.token(t, "u_alice", pwd, time.Minute),
			status: http.StatusUnauthorized, challenge: mfaHeader, body: mfaBody, asked: true},
		{name: "fail/too-old", service: testService, answer: fresh, token: a.token(t, "u_alice", withMFA, time.Hour),
			status:    http.StatusUnauthorized,
			challenge: `Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", max_age="300"`,
			body:      `{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: A login within the last 5 minutes","amr":[],"max_age":300}`, asked: true},
		{name: "fail/not-a-member", user: "u_bob", service: testService, answer: mfa, token: a.token(t, "u_bob", withMFA, time.Minute),
			status: http.StatusNotFound, body: notFoundBody, asked: true},
		{name: "fail/unknown-service", service: "nosuchservice", answer: mfa, token: a.token(t, "u_alice", withMFA, time.Minute),
			status: http.StatusNotFound, body: notFoundBody},
		{name: "fail/access-unavailable", service: testService, err: errors.New("connection refused"), token: a.token(t, "u_alice", withMFA, time.Minute),
			status: http.StatusServiceUnavailable, body: `{"error":"temporarily_unavailable","error_description":"The access service is unavailable; try again shortly."}`, asked: true},
		{name: "fail/no-token", service: testService, answer: mfa,
			status: http.StatusUnauthorized, challenge: "Bearer",
			body: `{"error":"invalid_request","error_description":"The request has no bearer access token"}`},
		{name: "fail/bad-token", service: testService, answer: mfa, token: "not-a-token",
			status: http.StatusUnauthorized, challenge: `Bearer error="invalid_token", error_description="The access token is malformed"`},
		// Before the service is looked up, so it tells outsiders nothing.
		{name: "fail/no-token-unknown-service", service: "nosuchservice", status: http.StatusUnauthorized, challenge: "Bearer"},
		{name: "fail/post", method: http.MethodPost, service: testService, answer: mfa, token: a.token(t, "u_alice", withMFA, time.Minute),
			status: http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := cmp.Or(tc.user, "u_alice")
			// Only alice is ever a member; anyone else gets the zero answer.
			*a.lookup = fakeLookup{answers: map[string]access.Answer{"acme/u_alice": tc.answer}, err: tc.err}
			rec := a.get(t, cmp.Or(tc.method, http.MethodGet), "/projects/"+tc.service, tc.token)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate\n got %s\nwant %s", got, tc.challenge)
			}
			if tc.body != "" {
				if got := rec.Body.String(); got != tc.body+"\n" {
					t.Errorf("body\n got %s\nwant %s", got, tc.body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			if want := []string{"acme/" + user}; tc.asked != slices.Equal(a.lookup.calls, want) {
				t.Errorf("access lookups %q, asked=%v", a.lookup.calls, tc.asked)
			}
		})
	}
}

// TestHTTPIssuerSlash: a gateway given the issuer with a trailing slash
// still accepts the server's tokens, whose iss has none.
func TestHTTPIssuerSlash(t *testing.T) {
	a := newAPITest(t, func(c *Config) { c.Issuer += "/" })
	a.lookup.answers["acme/u_alice"] = access.Answer{Member: true, Role: "member"}
	if rec := a.get(t, http.MethodGet, "/projects/"+testService, a.token(t, "u_alice", []string{"pwd"}, 0)); rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

// stalledLookup answers only when the request gives up.
type stalledLookup struct{}

func (stalledLookup) Lookup(ctx context.Context, _, _ string) (access.Answer, error) {
	<-ctx.Done()
	return access.Answer{}, ctx.Err()
}

// TestHTTPSlowServer: a server that does not answer gets the client a 503
// within DecideTimeout, not a hung request.
func TestHTTPSlowServer(t *testing.T) {
	a := newAPITest(t, func(c *Config) { c.DecideTimeout = 50 * time.Millisecond })
	a.use(t, stalledLookup{})
	start := time.Now()
	rec := a.get(t, http.MethodGet, "/projects/"+testService, a.token(t, "u_alice", []string{"pwd"}, 0))
	if rec.Code != http.StatusServiceUnavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("status %d after %v: %s", rec.Code, time.Since(start), rec.Body)
	}
}

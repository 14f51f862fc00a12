package load_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/load"
	"github.com/stepup-dev/stepup/internal/testserver"
)

const (
	svcID, svcSecret = "svc", "svc-secret-0123456789abcdef0123456789"
	username, pw     = "alice", "alice-password-1"
	orgID            = "acme"
)

// startServer runs a real Stepup server (memory store) on loopback.
func startServer(t *testing.T) string {
	t.Helper()
	hash, err := authz.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return testserver.Start(t, authz.Config{
		Clients: []authz.Client{
			{ID: "stepup-cli", Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
				GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
				Scopes: []string{"openid", "offline_access"}, TokenEndpointAuthMethod: "none"},
			{ID: svcID, SecretHash: authz.HashClientSecret(svcSecret), GrantTypes: []string{"client_credentials"},
				ResponseTypes: []string{"code"}, TokenEndpointAuthMethod: "client_secret_basic"},
		},
		Users:  []authz.User{{ID: "u_alice", Username: username, Email: "alice@example.com", PasswordHash: hash}},
		Orgs:   []authz.Org{{ID: orgID, Name: "ACME", Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The ssh scenario asks for far more certificates than a person
		// would hold.
		MaxLiveCertificates: 50000,
	})
}

func options(url string) load.Options {
	return load.Options{URL: url, Concurrency: 2, ClientID: svcID, ClientSecret: svcSecret, Username: username, Password: pw, Org: orgID}
}

// TestEveryScenarioSucceeds runs each scenario against a real server and
// expects nothing but successes, every one reported to OnResult, and a
// printed line per scenario.
func TestEveryScenarioSucceeds(t *testing.T) {
	o := options(startServer(t))
	o.Duration = 700 * time.Millisecond
	var mu sync.Mutex
	seen := map[string]int{}
	o.OnResult = func(r load.Result) {
		mu.Lock()
		seen[r.Scenario]++
		mu.Unlock()
		if r.OK() != (r.Err == nil) || r.At.IsZero() || r.Latency <= 0 {
			t.Errorf("inconsistent result %+v", r)
		}
	}
	rep, err := load.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != len(load.Scenarios) {
		t.Fatalf("ran %d scenarios, want %d", len(rep.Scenarios), len(load.Scenarios))
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, name := range load.Scenarios {
		s, ok := rep.Scenario(name)
		if !ok {
			t.Errorf("%s: missing from the report", name)
			continue
		}
		if s.OK == 0 || s.Failures() != 0 || s.Counts[load.KindOK] != s.Ops || seen[name] != s.Ops {
			t.Errorf("%s: %d ok of %d ops, counts %v, samples %v, %d reported to OnResult", name, s.OK, s.Ops, s.Counts, s.Samples, seen[name])
		}
		if s.Latency.P50 <= 0 || s.Latency.P50 > s.Latency.P90 || s.Latency.P90 > s.Latency.P99 || s.Latency.P99 > s.Latency.Max {
			t.Errorf("%s: percentiles out of order: %+v", name, s.Latency)
		}
		if s.Baseline.Cost <= 0 || s.Baseline.What == "" {
			t.Errorf("%s: no raw crypto cost: %+v", name, s.Baseline)
		}
		if !s.LastFailure.IsZero() || !s.RecoveredAt.IsZero() {
			t.Errorf("%s: failure times without failures: %+v", name, s)
		}
		if !hasLine(text.String(), name+" ") {
			t.Errorf("%s: no line in the printed report:\n%s", name, text.String())
		}
	}
	if login, _ := rep.Scenario(load.Login); !strings.Contains(login.Baseline.What, "argon2id") {
		t.Errorf("login's raw crypto leaves out the password hash: %q", login.Baseline.What)
	}
	if t.Failed() {
		t.Log(text.String())
	}
}

func hasLine(text, prefix string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestFailuresAreCountedByKind: a wrong client secret is a 401 on every
// request, and a wrong password stops the scenarios that need a login
// before their clock starts.
func TestFailuresAreCountedByKind(t *testing.T) {
	o := options(startServer(t))
	o.Duration, o.SkipBaseline = 200*time.Millisecond, true
	o.ClientSecret, o.Password = "wrong", "wrong"
	o.Scenarios = []string{load.ClientCredentials, load.Refresh}
	rep, err := load.Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "refresh: setup") {
		t.Errorf("err = %v, want the refresh scenario's setup failure", err)
	}
	cc, _ := rep.Scenario(load.ClientCredentials)
	if cc.Ops == 0 || cc.Counts["4xx:401"] != cc.Ops || cc.OK != 0 || !strings.Contains(cc.Samples["4xx:401"], "invalid_client") {
		t.Errorf("client_credentials with a wrong secret: %d ops, counts %v, samples %v", cc.Ops, cc.Counts, cc.Samples)
	}
	if cc.FirstFailure.IsZero() || cc.LastFailure.Before(cc.FirstFailure) || !cc.RecoveredAt.IsZero() {
		t.Errorf("failure times: first %v, last %v, recovered %v", cc.FirstFailure, cc.LastFailure, cc.RecoveredAt)
	}
	if r, ok := rep.Scenario(load.Refresh); !ok || r.Err == nil || r.Ops != 0 {
		t.Errorf("refresh with a wrong password: %+v", r)
	}
	var text strings.Builder
	_ = rep.WriteText(&text)
	if !strings.Contains(text.String(), "4xx:401=") || !strings.Contains(text.String(), "refresh             not run") {
		t.Errorf("printed report:\n%s", text.String())
	}
}

// TestRecovery: a token endpoint that answers 503 for a while, then
// tokens. The report has both kinds and the first success after the last
// 503, as a fault test that stops the store needs.
func TestRecovery(t *testing.T) {
	var up atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"temporarily_unavailable"}`)
			return
		}
		_, _ = io.WriteString(w, `{"access_token":"a","token_type":"bearer","expires_in":3600}`)
	}))
	defer ts.Close()
	time.AfterFunc(150*time.Millisecond, func() { up.Store(true) })
	var mu sync.Mutex
	var lastDown time.Time
	var ups []time.Time
	o := options(ts.URL)
	o.Scenarios, o.Duration, o.SkipBaseline = []string{load.ClientCredentials}, 400*time.Millisecond, true
	o.OnResult = func(r load.Result) {
		mu.Lock()
		defer mu.Unlock()
		if r.Kind == load.KindUnavailable && r.At.After(lastDown) {
			lastDown = r.At
		} else if r.OK() {
			ups = append(ups, r.At)
		}
	}
	rep, err := load.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Scenarios[0]
	if s.Counts[load.KindUnavailable] == 0 || s.Counts[load.KindOK] == 0 || s.Counts[load.KindOK]+s.Counts[load.KindUnavailable] != s.Ops {
		t.Fatalf("counts %v of %d ops", s.Counts, s.Ops)
	}
	if !s.RecoveredAt.After(s.LastFailure) || s.LastFailure.Before(s.FirstFailure) {
		t.Errorf("first failure %v, last %v, recovered %v", s.FirstFailure, s.LastFailure, s.RecoveredAt)
	}
	// Workers overlap: a success may finish before another worker's last
	// 503. Recovery is the first success after the last failure.
	var firstUp time.Time
	for _, at := range ups {
		if at.After(lastDown) && (firstUp.IsZero() || at.Before(firstUp)) {
			firstUp = at
		}
	}
	if !s.LastFailure.Equal(lastDown) || !s.RecoveredAt.Equal(firstUp) {
		t.Errorf("report and OnResult disagree: last failure %v / %v, recovery %v / %v", s.LastFailure, lastDown, s.RecoveredAt, firstUp)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	for _, o := range []load.Options{
		{URL: "127.0.0.1:8080", Scenarios: []string{load.Login}, Username: "a", Password: "b"},
		{URL: "http://127.0.0.1:1", Scenarios: []string{"nope"}},
		{URL: "http://127.0.0.1:1", Scenarios: []string{load.Introspect}},
		{URL: "http://127.0.0.1:1", Scenarios: []string{load.SSH}, ClientID: "x", ClientSecret: "y"},
		{URL: "http://127.0.0.1:1", Scenarios: []string{load.Members}, Username: "a", Password: "b"}, // no Org
	} {
		if _, err := load.Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) = nil error", o)
		}
	}
}

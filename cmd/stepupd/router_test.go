package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

func newRouter(t *testing.T, o routerOptions) http.Handler {
	t.Helper()
	srv, err := authz.New(authz.Config{Issuer: "http://127.0.0.1:1", Store: memory.New(memory.Config{}),
		Secret: "test-secret-0123456789abcdef", Metrics: o.metrics, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return router(srv, slog.New(slog.DiscardHandler), o)
}

func get(h http.Handler, path, auth string) (int, string) {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestMetricsEndpoint(t *testing.T) {
	h := newRouter(t, routerOptions{metrics: prometheus.NewRegistry()})
	for _, p := range []string{"/healthz", "/healthz", "/api/orgs/one", "/api/orgs/two", "/no/such/page"} {
		get(h, p, "")
	}
	status, body := get(h, "/metrics", "")
	if status != 200 {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	for _, want := range []string{
		`stepup_http_requests_total{code="200",method="GET",route="/healthz"} 2`,
		// One series for every organization asked about, by pattern.
		`stepup_http_requests_total{code="401",method="GET",route="/api/orgs/{org}"} 2`,
		`stepup_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`stepup_http_request_duration_seconds_count{method="GET",route="/healthz"} 2`,
		// The server's own metrics are on the same registry.
		"stepup_store_errors_total 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "/api/orgs/one") {
		t.Error("a request path became a label")
	}
}

func TestMetricsToken(t *testing.T) {
	h := newRouter(t, routerOptions{metrics: prometheus.NewRegistry(), metricsToken: "s3cret-scrape"})
	for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret-scrape2", "Basic czNjcmV0LXNjcmFwZQ=="} {
		if status, body := get(h, "/metrics", auth); status != 401 || !strings.Contains(body, "metrics.token") {
			t.Errorf("Authorization %q: %d %s", auth, status, body)
		}
	}
	if status, body := get(h, "/metrics", "Bearer s3cret-scrape"); status != 200 || !strings.Contains(body, "stepup_http_requests_total") {
		t.Errorf("with the token: %d %s", status, body)
	}
}

// TestHelp: --help and help print the commands and succeed; an unknown
// command says where to look.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, nil, &out, &errOut); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, want := range []string{"serve", "hash-password", "rotate-keys", "bench"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v does not list %s:\n%s", args, want, out.String())
			}
		}
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"serve", "--help"}, nil, &out, &errOut); !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "-dev") {
		t.Errorf("serve --help: %v, %q", err, errOut.String())
	}
	if err := run(t.Context(), []string{"nope"}, nil, &out, &errOut); err == nil || !strings.Contains(err.Error(), "stepupd help") {
		t.Errorf("an unknown command: %v", err)
	}
}

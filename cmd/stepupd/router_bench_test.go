package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

// BenchmarkRouter measures what the HTTP tree adds to a request, on the
// cheapest one (GET /healthz): the server's own mux alone, then the whole
// router as serve builds it (request id, access log, metrics, panic
// guard), with the access log written as JSON to a file, as in production,
// and discarded.
//
//	go test ./cmd/stepupd -run '^$' -bench Router -benchtime 200000x
func BenchmarkRouter(b *testing.B) {
	srv, err := authz.New(authz.Config{Issuer: "http://127.0.0.1:1", Store: memory.New(memory.Config{}),
		Secret: "test-secret-0123456789abcdef", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	run := func(h http.Handler) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
				if w.Code != http.StatusOK {
					b.Fatal(w.Code)
				}
			}
		}
	}
	b.Run("mux", run(srv.Handler()))
	b.Run("router-log-discarded", run(router(srv, slog.New(slog.DiscardHandler), routerOptions{metrics: prometheus.NewRegistry()})))
	b.Run("router-log-to-file", run(router(srv, slog.New(slog.NewJSONHandler(f, nil)), routerOptions{metrics: prometheus.NewRegistry()})))
	// As serve logs: through the buffer.
	logs := newLogBuffer(f)
	defer logs.close()
	b.Run("router-log-buffered", run(router(srv, newLogger(logs, false), routerOptions{metrics: prometheus.NewRegistry()})))
}

// TestLogBuffer: lines wait for the flush, a warning takes everything
// before it out at once, and after close nothing waits.
func TestLogBuffer(t *testing.T) {
	var out syncBuffer
	b := newLogBuffer(&out)
	log := newLogger(b, false)
	log.Info("request", "path", "/a")
	if strings.Contains(out.String(), "/a") {
		// The ticker may have fired in between; only a miss the other way
		// is a failure.
		t.Log("flushed before the warning")
	}
	log.Warn("store unavailable")
	if s := out.String(); !strings.Contains(s, `"path":"/a"`) || !strings.Contains(s, "store unavailable") {
		t.Fatalf("after a warning the log holds %q", s)
	}
	log.Info("request", "path", "/b")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "/b"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an info line never came out")
		}
	}
	b.close()
	log.Info("request", "path", "/c")
	if !strings.Contains(out.String(), "/c") {
		t.Fatalf("after close a line waited: %q", out.String())
	}
}

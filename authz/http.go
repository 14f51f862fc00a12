package authz

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// maxBody bounds every request body: OAuth requests are small, and a huge
// body must cost us nothing.
const maxBody = 64 << 10

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r)
	})
}

// securePage sets the headers every HTML page gets: no framing, no inline
// script or style, no caching of pages that carry CSRF tokens.
func securePage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// oauthError is the RFC 6749 error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, oauthError{Error: code, Description: description})
}

// unavailable answers a store failure: 503, a body a person can act on, and
// the cause in our log only. While the store is down every request fails
// alike, so the log gets one line a second with the count since the last,
// not thousands.
func (s *Server) unavailable(w http.ResponseWriter, err error) {
	s.metrics.storeErrors.Inc()
	if n := s.outageLog.note(s.cfg.Now()); n > 0 {
		s.log.Error("store unavailable", "err", err, "failures", n)
	}
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable",
		"The server cannot reach its data store. Nothing was changed; try again in a few seconds.")
}

// internalError answers a bug: 500 without details.
func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error("internal error", "err", err)
	writeError(w, http.StatusInternalServerError, "server_error", "The server hit an unexpected error. It has been logged.")
}

func isUnavailable(err error) bool { return errors.Is(err, storage.ErrUnavailable) }

// tooLarge reports whether the request body was cut off by limitBody.
func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// writeJSONBody writes v with headers already set by the caller.
func writeJSONBody(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v)
}

// everySecond thins out a repeated log line.
type everySecond struct {
	mu     sync.Mutex
	last   time.Time
	missed int
}

// note counts one occurrence and returns how many to report now: zero
// within a second of the last report.
func (e *everySecond) note(now time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.missed++
	if now.Sub(e.last) < time.Second {
		return 0
	}
	n := e.missed
	e.last, e.missed = now, 0
	return n
}

package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/tokens/verify"
)

// HTTPHandler serves the gateway's HTTP API, GET /projects/{service}, to
// people with a Stepup access token: the same policy as for SSH, answered
// with the step-up challenge of RFC 9470 when the token's authentication
// is not enough. It shares the server's access cache, and a request waits
// for the server at most DecideTimeout. Each handler keeps its own cache of
// the issuer's signing keys, so call it once.
func (s *Server) HTTPHandler() (http.Handler, error) {
	// Stepup's access tokens are for the issuer unless a client asks for
	// another audience, and the CLI does not.
	issuer := strings.TrimSuffix(s.cfg.Issuer, "/")
	v, err := verify.New(verify.Config{
		Issuer: issuer, Audience: issuer, Clients: s.cfg.TokenClients, HTTPClient: s.cfg.HTTPClient, Now: s.cfg.Now, Logger: s.log,
	})
	if err != nil {
		return nil, err
	}
	return newHTTPAPI(v, &httpAPI{access: s.access, services: s.cfg.Services, now: s.cfg.Now, log: s.log}, s.cfg.DecideTimeout), nil
}

func newHTTPAPI(v *verify.Verifier, api *httpAPI, timeout time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /projects/{service}", v.Middleware(http.HandlerFunc(api.serveProject)))
	// One bound for the waits on the server, keys and access answer alike,
	// so that a slow server gets the client a 503 rather than a connection
	// cut by the HTTP server's write timeout.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

type httpAPI struct {
	access   AccessLookup
	services map[string]string // service → org
	now      func() time.Time
	log      *slog.Logger
}

func (a *httpAPI) serveProject(w http.ResponseWriter, r *http.Request) {
	claims, ok := verify.ClaimsFrom(r.Context())
	if !ok {
		// Only reachable if the route is mounted without the middleware.
		http.Error(w, "no verified token", http.StatusInternalServerError)
		return
	}
	d := Decide(r.Context(), Policy{Services: a.services, Access: a.access, Now: a.now}, Attempt{
		Service: r.PathValue("service"), UserID: claims.Subject, AMR: claims.AMR, AuthTime: claims.AuthTime,
	})
	if d.Kind == Unavailable {
		a.log.Warn("could not ask the server about access", "service", d.Service, "org", d.Org, "user_id", claims.Subject, "err", d.Err)
	}
	d.WriteHTTP(w)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

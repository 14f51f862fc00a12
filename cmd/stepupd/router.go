package main

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stepup-dev/stepup/authz"
)

// routerOptions are the deployment's say in the HTTP tree.
type routerOptions struct {
	// metrics gathers everything /metrics shows; requests are counted into
	// it. Nil serves no /metrics.
	metrics *prometheus.Registry
	// metricsToken, when set, must come as a bearer token to read /metrics.
	metricsToken string
	// trustedProxies are believed about X-Forwarded-For.
	trustedProxies []netip.Prefix
}

// router is the whole HTTP tree: the server's endpoints under chi, with
// request logging, request metrics and a panic guard that answers without
// a stack.
func router(srv *authz.Server, log *slog.Logger, o routerOptions) http.Handler {
	r := chi.NewRouter()
	r.Use(fromTrustedProxies(o.trustedProxies), middleware.RequestID, observe(log, o.metrics), recoverer(log))
	if o.metrics != nil {
		r.Method(http.MethodGet, "/metrics", metricsHandler(o.metrics, o.metricsToken))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 not found: see /.well-known/openid-configuration for the endpoints", http.StatusNotFound)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
	})
	srv.Route(r)
	return r
}

// observe logs every request and, with a registry, records it by its
// route pattern, never its path: /api/orgs/{org} is one series however
// many organizations are asked for, and a scan of random paths adds only
// "unmatched". One wrapper and one clock reading serve both.
func observe(log *slog.Logger, reg prometheus.Registerer) func(http.Handler) http.Handler {
	var requests *prometheus.CounterVec
	var latency *prometheus.HistogramVec
	if reg != nil {
		requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepup_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"})
		latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stepup_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by method and route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"})
		reg.MustRegister(requests, latency)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			start := time.Now()
			// Deferred, so that a request the panic guard answered is
			// counted too.
			defer func() {
				took := time.Since(start)
				status := ww.Status()
				if status == 0 {
					status = http.StatusOK
				}
				log.Info("request", "method", r.Method, "path", r.URL.Path, "status", status,
					"duration", took, "request_id", middleware.GetReqID(r.Context()))
				if reg == nil {
					return
				}
				route := chi.RouteContext(r.Context()).RoutePattern()
				if route == "" {
					route = "unmatched"
				}
				method := r.Method
				if !knownMethods[method] {
					method = "other"
				}
				requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
				latency.WithLabelValues(method, route).Observe(took.Seconds())
			}()
			next.ServeHTTP(ww, r)
		})
	}
}

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

func metricsHandler(g prometheus.Gatherer, token string) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "401 unauthorized: /metrics needs the bearer token set as metrics.token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func recoverer(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.Error("panic serving request", "panic", v, "path", r.URL.Path,
						"request_id", middleware.GetReqID(r.Context()))
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusInternalServerError)
					_, _ = w.Write([]byte(`{"error":"server_error","error_description":"The server hit an unexpected error. It has been logged."}` + "\n"))
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

package verify

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/stepup-dev/stepup/tokens"
)

// Error codes of the JSON bodies and the WWW-Authenticate header.
const (
	// ErrorInvalidRequest answers a request with no bearer token (RFC 6750
	// section 3.1); the header then carries no error code at all.
	ErrorInvalidRequest = "invalid_request"
	ErrorInvalidToken   = "invalid_token"
	// ErrorUnavailable answers KeysUnavailable, in RFC 6749's word for it.
	ErrorUnavailable = "temporarily_unavailable"
)

type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

type claimsKey struct{}

// Middleware lets through requests with a valid `Authorization: Bearer`
// access token, with its claims in the request context (see ClaimsFrom).
// Others are answered here: 401 with a WWW-Authenticate challenge and a
// JSON {"error", "error_description"} body, or 503 when the issuer's keys
// cannot be had, since the token may well be good.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeJSON(w, http.StatusUnauthorized, errorBody{ErrorInvalidRequest, "The request has no bearer access token"})
			return
		}
		claims, err := v.Verify(r.Context(), raw)
		if err == nil {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
			return
		}
		reason := Malformed
		if e, ok := errors.AsType[*Error](err); ok {
			reason = e.Reason
		}
		if reason == KeysUnavailable {
			v.cfg.Logger.Warn("refusing access tokens: the issuer's keys are unavailable", "jwks", v.cfg.JWKSURL, "err", err)
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(v.cfg.MinRefetch.Seconds()))))
			writeJSON(w, http.StatusServiceUnavailable, errorBody{ErrorUnavailable, reason.Description()})
			return
		}
		v.cfg.Logger.Debug("refused an access token", "reason", reason.String(), "err", err)
		w.Header().Set("WWW-Authenticate", `Bearer error="`+ErrorInvalidToken+`", error_description="`+reason.Description()+`"`)
		writeJSON(w, http.StatusUnauthorized, errorBody{ErrorInvalidToken, reason.Description()})
	})
}

// bearerToken reads RFC 6750's header form, the only one we take: tokens
// in query strings end up in logs.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// ClaimsFrom returns the claims Middleware put in ctx.
func ClaimsFrom(ctx context.Context) (*tokens.AccessClaims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*tokens.AccessClaims)
	return c, ok
}

// Challenge answers that the token is valid but its authentication is not
// enough: 401 with RFC 9470's WWW-Authenticate and the JSON body, both
// naming what is missing, which clients read to step up.
func Challenge(w http.ResponseWriter, missing tokens.Requirements) {
	w.Header().Set("WWW-Authenticate", missing.WWWAuthenticate())
	writeJSON(w, http.StatusUnauthorized, missing.Body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

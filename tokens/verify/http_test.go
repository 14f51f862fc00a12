package verify_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/verify"
)

func TestMiddleware(t *testing.T) {
	f := newFakeIssuer(t)
	v := f.verifier(t)
	var seen *tokens.AccessClaims
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := verify.ClaimsFrom(r.Context())
		if !ok {
			t.Error("no claims in the context")
		}
		seen = c
		w.WriteHeader(http.StatusNoContent)
	}))
	good := f.sign(t, f.claims())
	expired := f.claims()
	expired.Expiry = f.clock.Now().Add(-time.Hour).Unix()
	wrongAud := f.claims()
	wrongAud.Audience = []string{"https://other.example"}

	tests := []struct {
		name          string
		authorization string
		status        int
		challenge     string // WWW-Authenticate
		body          map[string]string
	}{
		{"ok/bearer", "Bearer " + good, http.StatusNoContent, "", nil},
		{"ok/scheme-any-case", "bearer " + good, http.StatusNoContent, "", nil},
		{"fail/no-header", "", http.StatusUnauthorized, "Bearer",
			map[string]string{"error": "invalid_request", "error_description": "The request has no bearer access token"}},
		{"fail/basic", "Basic dXNlcjpwYXNz", http.StatusUnauthorized, "Bearer",
			map[string]string{"error": "invalid_request", "error_description": "The request has no bearer access token"}},
		{"fail/bearer-without-token", "Bearer ", http.StatusUnauthorized, "Bearer",
			map[string]string{"error": "invalid_request", "error_description": "The request has no bearer access token"}},
		{"fail/malformed", "Bearer not-a-token", http.StatusUnauthorized,
			`Bearer error="invalid_token", error_description="The access token is malformed"`,
			map[string]string{"error": "invalid_token", "error_description": "The access token is malformed"}},
		{"fail/expired", "Bearer " + f.sign(t, expired), http.StatusUnauthorized,
			`Bearer error="invalid_token", error_description="The access token expired"`,
			map[string]string{"error": "invalid_token", "error_description": "The access token expired"}},
		{"fail/wrong-audience", "Bearer " + f.sign(t, wrongAud), http.StatusUnauthorized,
			`Bearer error="invalid_token", error_description="The access token is not meant for this service"`,
			map[string]string{"error": "invalid_token", "error_description": "The access token is not meant for this service"}},
		{"fail/id-token", "Bearer " + signTyp(t, f, tokens.TypIDToken), http.StatusUnauthorized,
			`Bearer error="invalid_token", error_description="The token is not an access token"`,
			map[string]string{"error": "invalid_token", "error_description": "The token is not an access token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen = nil
			req := httptest.NewRequest(http.MethodGet, "/projects/x", nil)
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
			}
			if tt.body == nil {
				if seen == nil || seen.Subject != "u_alice" {
					t.Errorf("handler saw claims %+v", seen)
				}
				return
			}
			if seen != nil {
				t.Error("the handler ran for a refused token")
			}
			checkJSON(t, rec, tt.body)
		})
	}
}

func TestMiddlewareKeysUnavailable(t *testing.T) {
	f := newFakeIssuer(t)
	f.setStatus(http.StatusBadGateway)
	h := f.verifier(t).Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the handler ran without verified keys")
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+f.sign(t, f.claims()))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "10" {
		t.Errorf("Retry-After %q, want MinRefetch in seconds", got)
	}
	if got := rec.Header().Get("WWW-Authenticate"); got != "" {
		t.Errorf("WWW-Authenticate %q on a 503: the token was not found bad", got)
	}
	checkJSON(t, rec, map[string]string{"error": "temporarily_unavailable", "error_description": "The issuer's signing keys are unavailable; try again shortly"})
}

func TestChallenge(t *testing.T) {
	maxAge := int64(300)
	for _, tt := range []struct {
		name    string
		missing tokens.Requirements
		header  string
		body    string
	}{
		{"mfa", tokens.Requirements{AMR: []string{"mfa"}},
			`Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", amr="mfa"`,
			`{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: Multi-factor authentication (MFA)","amr":["mfa"]}`},
		{"mfa-sso-max-age", tokens.Requirements{AMR: []string{"mfa", "sso:acme"}, MaxAge: &maxAge},
			`Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", amr="mfa sso:acme", max_age="300"`,
			`{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: Multi-factor authentication (MFA), Single sign-on (SSO), provider: \"acme\", A login within the last 5 minutes","amr":["mfa","sso:acme"],"max_age":300}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			verify.Challenge(rec, tt.missing)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", rec.Code)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.header {
				t.Errorf("WWW-Authenticate\n got %s\nwant %s", got, tt.header)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			if got := rec.Body.String(); got != tt.body+"\n" {
				t.Errorf("body\n got %s\nwant %s", got, tt.body)
			}
		})
	}
}

func checkJSON(t *testing.T, rec *httptest.ResponseRecorder, want map[string]string) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if len(got) != len(want) {
		t.Errorf("body %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("body %s = %q, want %q", k, got[k], v)
		}
	}
}

package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeServer answers discovery and refuses every refresh the way a
// server whose upstream SSO session lapsed does.
func fakeServer(t *testing.T) *httptest.Server {
	var ts *httptest.Server
	ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{
				"issuer": ts.URL, "authorization_endpoint": ts.URL + "/oauth2/authorize",
				"token_endpoint": ts.URL + "/oauth2/token", "authorization_response_iss_parameter_supported": true,
			})
		case "/oauth2/token":
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant",
				"error_description": "The refresh token is no longer valid: the SSO session has expired."})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	return ts
}

func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc(b) + "." + enc([]byte("sig"))
}

func TestSSOExpiredOnRefreshLogsOut(t *testing.T) {
	ts := fakeServer(t)
	e := &cliEnv{t: t, issuer: ts.URL, dir: t.TempDir()}
	s := &session{dir: filepath.Join(e.dir, "stepup")}
	exp := time.Now().Add(10 * time.Second)
	if err := s.save(&storedTokens{Issuer: ts.URL, RefreshToken: "r1", Expiry: exp,
		AccessToken: fakeJWT(map[string]any{"sub": "u_alice", "exp": exp.Unix()})}); err != nil {
		t.Fatal(err)
	}
	r := e.run("auth:token")
	if r.code != ExitError || !strings.Contains(r.stderr, "Your SSO session has expired. You have been logged out.") {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(s.path("tokens.json")); !os.IsNotExist(err) {
		t.Errorf("the tokens survived: %v", err)
	}
}

func TestCallbackChecksIssuerAndReportsRefusal(t *testing.T) {
	srv := &server{Issuer: "https://id.example.com", IssParameterSupported: true}
	cases := map[string]struct{ query, want string }{
		"fail/wrong-iss":   {"state=s&code=c&iss=https://evil.example.com", "not from"},
		"fail/missing-iss": {"state=s&code=c", "has no iss"},
		"fail/refused":     {"state=s&iss=https://id.example.com&error=access_denied&error_description=No+thanks", "access_denied: No thanks"},
		"ok":               {"state=s&code=c&iss=https://id.example.com", ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			results := make(chan callbackResult, 1)
			h := (&browserLogin{srv: srv}).callback("s", results)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+c.query, nil))
			res := <-results
			switch {
			case c.want == "" && (res.err != nil || res.code != "c"):
				t.Errorf("got %+v", res)
			case c.want != "" && (res.err == nil || !strings.Contains(res.err.Error(), c.want)):
				t.Errorf("got %v, want %q", res.err, c.want)
			}
			if !strings.Contains(rec.Body.String(), "return to the terminal") {
				t.Errorf("page %q", rec.Body.String())
			}
		})
	}
	// A stray request neither answers the login nor ends the wait.
	results := make(chan callbackResult, 1)
	rec := httptest.NewRecorder()
	(&browserLogin{srv: srv}).callback("s", results).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?state=other&code=c", nil))
	if rec.Code != http.StatusBadRequest || len(results) != 0 {
		t.Errorf("stray callback: %d, %d results", rec.Code, len(results))
	}
}

func TestLoginTimesOut(t *testing.T) {
	ts := fakeServer(t)
	e := &cliEnv{t: t, issuer: ts.URL, dir: t.TempDir()}
	var out strings.Builder
	app := &App{Stderr: &out, Getenv: func(k string) string {
		return map[string]string{"XDG_CONFIG_HOME": e.dir, "STEPUP_URL": e.issuer}[k]
	}, OpenURL: func(context.Context, string) error { return nil }}
	if code := app.Run(context.Background(), []string{"login", "--timeout", "200ms"}); code != ExitError {
		t.Errorf("exit %d", code)
	}
	if !strings.Contains(out.String(), "did not come back within") {
		t.Errorf("stderr: %s", out.String())
	}
}

func TestEveryCommandHasAnExample(t *testing.T) {
	root := New().rootCmd()
	for _, c := range root.Commands() {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		if c.Example == "" {
			t.Errorf("%s has no example", c.Name())
		}
	}
	var out strings.Builder
	app := &App{Stdout: &out}
	if code := app.Run(context.Background(), []string{"completion", "bash"}); code != 0 || !strings.Contains(out.String(), "stepup") {
		t.Errorf("completion bash: %d", code)
	}
}

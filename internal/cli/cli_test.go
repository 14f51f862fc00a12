package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testserver"
	"github.com/stepup-dev/stepup/tokens"
)

const alicePassword = "correct horse battery staple"

var aliceHash = sync.OnceValue(func() string {
	h, err := authz.HashPassword(alicePassword)
	if err != nil {
		panic(err)
	}
	return h
})

// newServer runs a real Stepup server on loopback: the CLI's public
// client, alice, and an organization that requires MFA.
func newServer(t *testing.T) string {
	t.Helper()
	return testserver.Start(t, authz.Config{
		Clients: []authz.Client{{
			ID: DefaultClientID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes: []string{"authorization_code", "refresh_token", "api_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none",
		}},
		Users: []authz.User{{ID: "u_alice", Username: "alice", Email: "alice@example.com", Name: "Alice",
			PasswordHash: aliceHash(), EmailVerified: true}},
		Orgs: []authz.Org{{ID: "acme", Name: "ACME", MFARequired: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}},
	})
}

// cliEnv is one person's machine: a config directory and a browser.
type cliEnv struct {
	t      *testing.T
	issuer string
	dir    string
	opened int
	mu     sync.Mutex
	// open is the person's browser; nil means browse, a password login.
	open func(ctx context.Context, url string) error
	// interactive lets the CLI send the person to the browser by itself,
	// as with a terminal.
	interactive bool
	// token is STEPUP_TOKEN, for servers the CLI cannot log in to.
	token string
}

func newEnv(t *testing.T) *cliEnv {
	return &cliEnv{t: t, issuer: newServer(t), dir: t.TempDir()}
}

type result struct {
	code           int
	stdout, stderr string
}

func (e *cliEnv) run(args ...string) result {
	var out, errb bytes.Buffer
	app := &App{
		Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string {
			switch k {
			case "XDG_CONFIG_HOME":
				return e.dir
			case "STEPUP_URL":
				return e.issuer
			case "STEPUP_TOKEN":
				return e.token
			}
			return ""
		},
		OpenURL:     e.browse,
		Interactive: func() bool { return e.interactive },
	}
	if e.open != nil {
		app.OpenURL = e.open
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	code := app.Run(ctx, args)
	return result{code, out.String(), errb.String()}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// browse plays the person at the browser: it logs in as alice and lets
// the redirects lead back to the CLI's loopback listener.
func (e *cliEnv) browse(ctx context.Context, authURL string) error {
	e.mu.Lock()
	e.opened++
	e.mu.Unlock()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := c.Get(authURL)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Request.URL.Path, "/login") {
		return fmt.Errorf("expected the login page, got %s: %s", resp.Request.URL, body)
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(body), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	if form.Get("csrf_token") == "" {
		return fmt.Errorf("no csrf_token in the login page: %s", body)
	}
	form.Set("username", "alice")
	form.Set("password", alicePassword)
	resp, err = c.PostForm(e.issuer+"/login", form)
	if err != nil {
		return err
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Request.URL.Path != "/callback" || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the browser ended at %s (%d): %s", resp.Request.URL, resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "<h1>You are logged in</h1>") || !strings.Contains(string(body), "return to the terminal") ||
		!strings.Contains(string(body), `<html lang="en">`) {
		return fmt.Errorf("the callback page is not the styled page that sends the person back: %s", body)
	}
	return nil
}

// writeConfig writes the CLI's config.json.
func (e *cliEnv) writeConfig(c fileConfig) {
	e.t.Helper()
	b, _ := json.Marshal(c)
	if err := os.MkdirAll(filepath.Join(e.dir, "stepup"), 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "stepup", "config.json"), b, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *cliEnv) tokens() storedTokens {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "stepup", "tokens.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var t storedTokens
	if err := json.Unmarshal(b, &t); err != nil {
		e.t.Fatal(err)
	}
	return t
}

// expireSoon makes the stored access token look 30 s from expiry.
func (e *cliEnv) expireSoon() {
	e.t.Helper()
	tok := e.tokens()
	tok.Expiry = time.Now().Add(30 * time.Second)
	b, _ := json.Marshal(tok)
	if err := os.WriteFile(filepath.Join(e.dir, "stepup", "tokens.json"), b, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *cliEnv) mustRun(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("stepup %s exited %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

func TestLoginStoresTokensAndCertificate(t *testing.T) {
	e := newEnv(t)
	r := e.mustRun("login")
	if !strings.Contains(r.stdout, "Logged in as alice (pwd)") {
		t.Errorf("login said %q", r.stdout)
	}
	dir := filepath.Join(e.dir, "stepup")
	for name, want := range map[string]os.FileMode{"": 0o700, "tokens.json": 0o600, "id_ed25519": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %o, want %o", name, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "id_ed25519-cert.pub")); err != nil {
		t.Errorf("no certificate: %v", err)
	}
	tok := e.tokens()
	if tok.RefreshToken == "" || tok.IDToken == "" || tok.Issuer != e.issuer {
		t.Errorf("tokens incomplete: %+v", tok)
	}

	// A second login without -f keeps the session.
	r = e.mustRun("login")
	if !strings.Contains(r.stdout, "Already logged in as alice") || e.opened != 1 {
		t.Errorf("second login: %q, browser opened %d times", r.stdout, e.opened)
	}

	r = e.mustRun("auth:info")
	for _, want := range []string{"User: alice (u_alice)", "Authentication methods: pwd", "Authenticated at:", "Access token expires:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("auth:info lacks %q:\n%s", want, r.stdout)
		}
	}

	r = e.mustRun("ssh-cert:info")
	for _, want := range []string{"Principal: alice", "Valid:", "Authentication methods: pwd", "Multi-factor authentication: not verified"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ssh-cert:info lacks %q:\n%s", want, r.stdout)
		}
	}

	r = e.mustRun("ssh-cert:load", "--refresh-only")
	if !strings.Contains(r.stdout, "is valid") {
		t.Errorf("ssh-cert:load re-issued a current certificate: %s", r.stdout)
	}
}

func TestLoginNoBrowserPrintsURL(t *testing.T) {
	e := newEnv(t)
	var printed string
	done := make(chan error, 1)
	// The person copies the URL from the terminal into a browser.
	out := &watchWriter{found: func(line string) {
		if strings.HasPrefix(line, e.issuer+"/oauth2/authorize?") && printed == "" {
			printed = line
			go func() { done <- e.browse(context.Background(), line) }()
		}
	}}
	app := &App{Stdout: io.Discard, Stderr: out, Getenv: func(k string) string {
		return map[string]string{"XDG_CONFIG_HOME": e.dir, "STEPUP_URL": e.issuer}[k]
	}, OpenURL: func(context.Context, string) error { t.Error("opened a browser"); return nil }}
	if code := app.Run(context.Background(), []string{"login", "--no-browser", "--method", "pwd"}); code != 0 {
		t.Fatalf("exit %d: %s", code, out.buf.String())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(printed)
	if u.Query().Get("amr") != "pwd" || u.Query().Get("code_challenge_method") != "S256" {
		t.Errorf("authorize URL %s", printed)
	}
}

type watchWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	found func(line string)
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, l := range strings.Split(string(p), "\n") {
		w.found(strings.TrimSpace(l))
	}
	return len(p), nil
}

func TestAuthTokenRefreshesOnceUnderLock(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	before := e.tokens()
	// fosite stamps exp from the real clock, so the stored expiry is
	// moved instead.
	e.expireSoon()

	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = e.run("auth:token") }()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("auth:token %d exited %d: %s", i, r.code, r.stderr)
		}
	}
	if results[0].stdout != results[1].stdout {
		t.Error("the two invocations printed different tokens: both refreshed")
	}
	after := e.tokens()
	if strings.TrimSpace(results[0].stdout) != after.AccessToken || after.AccessToken == before.AccessToken {
		t.Error("auth:token did not print the refreshed token")
	}
	if after.RefreshToken == before.RefreshToken {
		t.Error("the refresh token was not rotated")
	}
	// A refresh family revoked by a reuse would fail here.
	e.expireSoon()
	e.mustRun("auth:token")

	// The certificate follows the new token.
	r := e.mustRun("ssh-cert:load", "--refresh-only")
	if !strings.Contains(r.stdout, "was issued") {
		t.Errorf("ssh-cert:load kept a certificate of an older token: %s", r.stdout)
	}
}

func TestStepupTokenEnv(t *testing.T) {
	e := newEnv(t)
	var out bytes.Buffer
	app := &App{Stdout: &out, Getenv: func(k string) string {
		return map[string]string{"XDG_CONFIG_HOME": e.dir, "STEPUP_URL": e.issuer, "STEPUP_TOKEN": "given"}[k]
	}}
	if code := app.Run(context.Background(), []string{"auth:token"}); code != 0 || out.String() != "given\n" {
		t.Errorf("exit %d, printed %q", code, out.String())
	}
}

func TestAPIStepUpNonInteractive(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	r := e.mustRun("api", "GET", "/api/me")
	if !strings.Contains(r.stdout, `"username":"alice"`) {
		t.Errorf("api GET /api/me: %s", r.stdout)
	}
	r = e.run("api", "GET", "/api/orgs/acme", "--no-interaction")
	if r.code != ExitStepUp {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, ExitStepUp, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "  stepup login --method mfa\n") {
		t.Errorf("stderr lacks the login command:\n%s", r.stderr)
	}
}

func TestLogoutRevokes(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	tok := e.tokens()
	r := e.mustRun("logout")
	if !strings.Contains(r.stdout, "Logged out") || strings.Contains(r.stderr, "Warning") {
		t.Errorf("logout: %s %s", r.stdout, r.stderr)
	}
	for _, name := range []string{"tokens.json", "id_ed25519-cert.pub"} {
		if _, err := os.Stat(filepath.Join(e.dir, "stepup", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived logout: %v", name, err)
		}
	}
	cfg := &oauth2.Config{ClientID: DefaultClientID, Endpoint: oauth2.Endpoint{TokenURL: e.issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
	if _, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Error("the refresh token still works after logout")
	}
	if r := e.run("auth:token"); r.code == 0 || !strings.Contains(r.stderr, "stepup login") {
		t.Errorf("auth:token after logout: %d %s", r.code, r.stderr)
	}
}

func TestUnreachableServer(t *testing.T) {
	e := &cliEnv{t: t, issuer: "http://127.0.0.1:1", dir: t.TempDir()}
	r := e.run("login")
	if r.code != ExitError || !strings.Contains(r.stderr, "Cannot reach the Stepup server at http://127.0.0.1:1") {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
}

func TestParseDenial(t *testing.T) {
	stderr := "Error: Access denied\nService: abc--app\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\",\"sso:acme\"]}\nDetail: …\n"
	ch, denied := parseDenial([]byte(stderr))
	if !denied || ch == nil || strings.Join(ch.AMR, " ") != "mfa sso:acme" {
		t.Fatalf("parseDenial = %+v, %v", ch, denied)
	}
	fiveMinutes := int64(300)
	if got := loginCommand(tokens.Requirements{AMR: ch.AMR, MaxAge: &fiveMinutes}); got != "stepup login --method mfa,sso:acme --max-age 300" {
		t.Errorf("loginCommand = %q", got)
	}
	// max_age 0 is "a login now", not "any age".
	zero := int64(0)
	if got := loginCommand(tokens.Requirements{MaxAge: &zero}); got != "stepup login --max-age 0" {
		t.Errorf("loginCommand for max_age 0 = %q", got)
	}
	now := time.Unix(1_800_000_000, 0)
	claims := tokens.AccessClaims{AMR: []string{"pwd", "otp", "mfa"}, AuthTime: now.Add(-time.Minute).Unix()}
	if meets(claims, tokens.Requirements{MaxAge: &zero}, now) || !meets(claims, tokens.Requirements{AMR: []string{"mfa"}}, now) ||
		meets(claims, tokens.Requirements{AMR: []string{"phr"}}, now) {
		t.Error("meets disagrees with tokens.Missing")
	}
	if !strings.Contains(explain(ch), "Multi-factor authentication (MFA) is required.") {
		t.Errorf("explain = %q", explain(ch))
	}
	if _, denied := parseDenial([]byte("Permission denied (publickey).")); denied {
		t.Error("an sshd refusal read as the gateway's")
	}
}

// TestStepupTokenIsAnAPIToken: an API token in STEPUP_TOKEN is exchanged
// (grant_type=api_token) and used, with no browser and no session.
func TestStepupTokenIsAnAPIToken(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	access := e.tokens().AccessToken
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/api/me/api-tokens", strings.NewReader(`{"name":"ci"}`))
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.HasPrefix(created.Token, "stpa_") {
		t.Fatalf("creating an API token: %d", resp.StatusCode)
	}
	run := func(token string) (int, string, string) {
		var out, errOut bytes.Buffer
		app := &App{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string {
			return map[string]string{"XDG_CONFIG_HOME": t.TempDir(), "STEPUP_URL": e.issuer, "STEPUP_TOKEN": token}[k]
		}}
		code := app.Run(context.Background(), []string{"api", "GET", "/api/me", "--no-interaction"})
		return code, out.String(), errOut.String()
	}
	if code, out, errOut := run(created.Token); code != 0 || !strings.Contains(out, `"username":"alice"`) {
		t.Fatalf("with an API token: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut := run(created.Token + "x"); code == 0 || !strings.Contains(errOut, "STEPUP_TOKEN was refused") {
		t.Fatalf("with a wrong API token: exit %d, %s", code, errOut)
	}
}

// TestLoginPort: --port is where the browser comes back; a port another
// program holds gets words a person can act on, and no browser.
func TestLoginPort(t *testing.T) {
	e := newEnv(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	r := e.run("login", "--port", port)
	want := "Error: Port " + port + " on 127.0.0.1 is in use by another program. Close it or choose another with --port (or login_port in config.json), or leave both out to pick a free one.\n"
	if r.code != ExitError || !strings.HasSuffix(r.stderr, want) || e.opened != 0 {
		t.Errorf("exit %d, browser opened %d times, stderr:\n%s\nwant it to end with:\n%s", r.code, e.opened, r.stderr, want)
	}
	taken.Close()

	var redirect string
	e.open = func(ctx context.Context, authURL string) error {
		u, _ := url.Parse(authURL)
		redirect = u.Query().Get("redirect_uri")
		return e.browse(ctx, authURL)
	}
	e.mustRun("login", "--port", port)
	if redirect != "http://127.0.0.1:"+port+"/callback" {
		t.Errorf("redirect_uri %q, want port %s", redirect, port)
	}
	if r := e.run("login", "--port", "70000"); r.code != ExitError || !strings.Contains(r.stderr, "--port takes a port number") {
		t.Errorf("--port 70000: exit %d: %s", r.code, r.stderr)
	}

	// login_port in config.json serves every login, the step-ups inside
	// api and ssh included, which have no --port of their own.
	e.writeConfig(fileConfig{LoginPort: taken.Addr().(*net.TCPAddr).Port})
	redirect = ""
	e.mustRun("login", "-f")
	if redirect != "http://127.0.0.1:"+port+"/callback" {
		t.Errorf("with login_port %s: redirect_uri %q", port, redirect)
	}
	e.writeConfig(fileConfig{LoginPort: 70000})
	if r := e.run("login", "-f"); r.code != ExitError || !strings.Contains(r.stderr, "login_port takes a port number") {
		t.Errorf("login_port 70000: exit %d: %s", r.code, r.stderr)
	}
}

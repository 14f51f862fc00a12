package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
	"github.com/stepup-dev/stepup/internal/testenv"
)

const (
	e2eService       = "svc-app"
	e2eGatewayID     = "stepup-gateway"
	e2eGatewaySecret = "gateway-secret-0123456789abcdef"
)

// newGatewayServer is newServer's configuration plus the gateway's
// confidential client, which reads access decisions with
// client_credentials.
func newGatewayServer(t *testing.T) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	issuer := "http://" + ts.Listener.Addr().String()
	srv, err := authz.New(authz.Config{
		Issuer: issuer,
		Store:  memory.New(memory.Config{}),
		Secret: "test-secret-0123456789abcdef",
		Clients: []authz.Client{
			{ID: DefaultClientID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
				GrantTypes: []string{"authorization_code", "refresh_token", "api_token"}, ResponseTypes: []string{"code"},
				Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none"},
			{ID: e2eGatewayID, SecretHash: authz.HashClientSecret(e2eGatewaySecret), GrantTypes: []string{"client_credentials"},
				Scopes: []string{"access.read"}, TokenEndpointAuthMethod: "client_secret_basic"},
		},
		Users: []authz.User{{ID: "u_alice", Username: "alice", Email: "alice@example.com", Name: "Alice",
			PasswordHash: aliceHash(), EmailVerified: true}},
		Orgs: []authz.Org{{ID: "acme", Name: "ACME", MFARequired: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	return issuer
}

// startGatewayBinary builds stepup-gateway and runs it on a free loopback
// port with svc-app in acme; it returns the SSH port.
func startGatewayBinary(t *testing.T, issuer string) int {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "stepup-gateway")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/stepup-dev/stepup/cmd/stepup-gateway").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "stepup.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("services:\n  - id: %s\n    org: acme\ngateway: {client_id: %s, client_secret: %q}\n",
		e2eService, e2eGatewayID, e2eGatewaySecret)), 0o600); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	cmd := exec.Command(bin, "--issuer", issuer, "--config", cfg,
		"--ssh-addr", "127.0.0.1:"+strconv.Itoa(port),
		"--http-addr", "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"--git-root", filepath.Join(dir, "repos"), "--state-dir", filepath.Join(dir, "state"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log bytes.Buffer
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		var once sync.Once
		for s.Scan() {
			mu.Lock()
			log.WriteString(s.Text() + "\n")
			mu.Unlock()
			if strings.Contains(s.Text(), "SSH gateway listening") {
				once.Do(func() { close(ready) })
			}
		}
		done <- cmd.Wait()
	}()
	logged := func() string { mu.Lock(); defer mu.Unlock(); return log.String() }
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("stepup-gateway log:\n%s", logged())
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("stepup-gateway exited at start: %v\n%s", err, logged())
	case <-time.After(15 * time.Second):
		t.Fatalf("stepup-gateway did not start within 15s\n%s", logged())
	}
	return port
}

// hermeticSSH puts a wrapper first on PATH that runs the real ssh without
// the tester's configuration, agent or known hosts (the gateway's host key
// is new each run, and nobody is there to accept it).
func hermeticSSH(t *testing.T, real string) {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\nunset SSH_AUTH_SOCK\nexec '" + real + "' -F none -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" +
		" -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=10 \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// mfaBrowser plays alice at the browser: password, then (once she has MFA)
// a code from her authenticator.
type mfaBrowser struct {
	issuer string
	mu     sync.Mutex
	secret string
}

func (b *mfaBrowser) setSecret(s string) { b.mu.Lock(); b.secret = s; b.mu.Unlock() }

func formOf(page string) url.Values {
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	return form
}

func readPage(resp *http.Response, err error) (*http.Response, string, error) {
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func (b *mfaBrowser) browse(ctx context.Context, authURL string) error {
	b.mu.Lock()
	secret := b.secret
	b.mu.Unlock()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, page, err := readPage(c.Get(authURL))
	if err != nil {
		return err
	}
	if resp.Request.URL.Path != "/login" {
		return fmt.Errorf("expected the login page, got %s: %s", resp.Request.URL, page)
	}
	form := formOf(page)
	form.Set("username", "alice")
	form.Set("password", alicePassword)
	if resp, page, err = readPage(c.PostForm(b.issuer+"/login", form)); err != nil {
		return err
	}
	if resp.Request.URL.Path == "/login/otp" {
		if secret == "" {
			return fmt.Errorf("asked for a code before MFA was set up: %s", page)
		}
		// The enrollment used the current step, and a step counts once.
		code, err := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
		if err != nil {
			return err
		}
		form = formOf(page)
		form.Set("code", code)
		if resp, page, err = readPage(c.PostForm(b.issuer+"/login/otp", form)); err != nil {
			return err
		}
	}
	if resp.Request.URL.Path != "/callback" || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the browser ended at %s (%d): %s", resp.Request.URL, resp.StatusCode, page)
	}
	return nil
}

var totpSecretOnPage = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)

// enrollAliceMFA signs alice in on the server and turns MFA on through the
// account page; it returns the TOTP secret.
func enrollAliceMFA(t *testing.T, issuer string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	must := func(resp *http.Response, page string, err error) (*http.Response, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return resp, page
	}
	resp, page := must(readPage(c.Get(issuer + "/account/security")))
	if resp.Request.URL.Path != "/login" {
		t.Fatalf("account page without a session: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	form := formOf(page)
	form.Set("username", "alice")
	form.Set("password", alicePassword)
	resp, page = must(readPage(c.PostForm(issuer+"/login", form)))
	if resp.Request.URL.Path != "/account/security" || !strings.Contains(page, "Set up application") {
		t.Fatalf("after signing in: %d at %s: %s", resp.StatusCode, resp.Request.URL, page)
	}
	_, page = must(readPage(c.PostForm(issuer+"/account/security/setup", formOf(page))))
	m := totpSecretOnPage.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no TOTP secret on the setup page: %s", page)
	}
	code, err := totp.GenerateCode(m[1], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	form = formOf(page)
	form.Set("code", code)
	if _, page = must(readPage(c.PostForm(issuer+"/account/security/verify", form))); !strings.Contains(page, "Multi-factor authentication is on") {
		t.Fatalf("MFA not on after Verify & save: %s", page)
	}
	return m[1]
}

// TestSSHThroughGatewayStepsUpToMFA runs the CLI in-process against a real
// Stepup server and the built stepup-gateway, through the real ssh.
func TestSSHThroughGatewayStepsUpToMFA(t *testing.T) {
	realSSH := testenv.Require(t, "ssh", "openssh-client")
	issuer := newGatewayServer(t)
	sshPort := startGatewayBinary(t, issuer)
	hermeticSSH(t, realSSH)

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "stepup"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(fileConfig{URL: issuer, SSHHost: "127.0.0.1", SSHPort: sshPort})
	if err := os.WriteFile(filepath.Join(dir, "stepup", "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	b := &mfaBrowser{issuer: issuer}
	run := func(args ...string) result {
		t.Helper()
		var out, errb bytes.Buffer
		app := &App{
			Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
			Getenv: func(k string) string {
				if k == "XDG_CONFIG_HOME" {
					return dir
				}
				return ""
			},
			OpenURL:     b.browse,
			Interactive: func() bool { return false },
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return result{app.Run(ctx, args), out.String(), errb.String()}
	}
	mustRun := func(args ...string) result {
		t.Helper()
		r := run(args...)
		if r.code != 0 {
			t.Fatalf("stepup %s exited %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		return r
	}

	// Password only: the gateway's org requires MFA, and without a
	// terminal the CLI says how to get it.
	if r := mustRun("login"); !strings.Contains(r.stdout, "Logged in as alice (pwd)") {
		t.Errorf("login said %q", r.stdout)
	}
	r := run("ssh", e2eService, "whoami", "--no-interaction")
	if r.code != ExitStepUp {
		t.Fatalf("ssh with a password-only certificate exited %d, want %d\nstdout: %s\nstderr: %s", r.code, ExitStepUp, r.stdout, r.stderr)
	}
	for _, want := range []string{"Error: Access denied", "Multi-factor authentication (MFA) is required.", "  stepup login --method mfa\n"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if r.stdout != "" {
		t.Errorf("stdout of a refused ssh: %q", r.stdout)
	}

	// alice turns MFA on, then logs in with it.
	b.setSecret(enrollAliceMFA(t, issuer))
	if r := mustRun("login", "-f", "--method", "mfa"); !strings.Contains(r.stdout, "Logged in as alice") || !strings.Contains(r.stdout, "mfa") {
		t.Errorf("login --method mfa said %q", r.stdout)
	}

	if r := mustRun("ssh", e2eService, "whoami"); r.stdout != "alice "+e2eService+"\n" {
		t.Errorf("ssh whoami printed %q (stderr %q)", r.stdout, r.stderr)
	}
	if r := mustRun("ssh-cert:info"); !strings.Contains(r.stdout, "Multi-factor authentication: verified") {
		t.Errorf("ssh-cert:info:\n%s", r.stdout)
	}
}

package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
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
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/internal/testserver"
)

const (
	e2eService       = "svc-app"
	e2eGatewayID     = "stepup-gateway"
	e2eGatewaySecret = "gateway-secret-0123456789abcdef"
)

// newGatewayServer is newServer's configuration plus the gateway's
// confidential client, which reads access decisions with
// client_credentials; change adjusts it (nil: acme requires MFA).
func newGatewayServer(t *testing.T, change func(*authz.Config)) string {
	t.Helper()
	cfg := authz.Config{
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
	}
	if change != nil {
		change(&cfg)
	}
	return testserver.Start(t, cfg)
}

// builds are the binaries the tests run (stepup-gateway, stepup), each
// built once under one directory that TestMain removes.
var builds = struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*build
}{bins: map[string]*build{}}

type build struct {
	once sync.Once
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

// buildBinary builds the command github.com/stepup-dev/stepup/cmd/<name>
// once and returns the binary.
func buildBinary(t *testing.T, name string) string {
	t.Helper()
	builds.mu.Lock()
	b := builds.bins[name]
	if b == nil {
		b = &build{}
		builds.bins[name] = b
	}
	var err error
	if builds.dir == "" {
		builds.dir, err = os.MkdirTemp("", "stepup-cli-test-")
	}
	dir := builds.dir
	builds.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	b.once.Do(func() {
		b.bin = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", b.bin, "github.com/stepup-dev/stepup/cmd/"+name).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// buildGateway builds stepup-gateway and writes its config, with svc-app
// in acme; it returns the binary and the config file.
func buildGateway(t *testing.T) (bin, cfg string) {
	t.Helper()
	bin = buildBinary(t, "stepup-gateway")
	cfg = filepath.Join(t.TempDir(), "stepup.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("services:\n  - id: %s\n    org: acme\ngateway: {client_id: %s, client_secret: %q}\n",
		e2eService, e2eGatewayID, e2eGatewaySecret)), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, cfg
}

// startGatewayBinary builds stepup-gateway and runs it on a free loopback
// port, keeping its host key in a directory of its own; it returns the SSH
// port.
func startGatewayBinary(t *testing.T, issuer string) int {
	t.Helper()
	bin, cfg := buildGateway(t)
	port := testenv.FreePort(t)
	runGateway(t, bin, cfg, issuer, port, t.TempDir())
	return port
}

// runGateway runs the built gateway on port with its state (the host key)
// in stateDir until stop is called or the test ends.
func runGateway(t *testing.T, bin, cfg, issuer string, port int, stateDir string) (stop func()) {
	t.Helper()
	cmd := exec.Command(bin, "--issuer", issuer, "--config", cfg,
		"--ssh-addr", "127.0.0.1:"+strconv.Itoa(port),
		"--http-addr", "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"--git-root", filepath.Join(stateDir, "repos"), "--state-dir", stateDir, "--revocation-refresh", "1s")
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
	var stopOnce sync.Once
	stop = func() {
		stopOnce.Do(func() {
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
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("stepup-gateway exited at start: %v\n%s", err, logged())
	case <-time.After(15 * time.Second):
		t.Fatalf("stepup-gateway did not start within 15s\n%s", logged())
	}
	return stop
}

// personSSH puts an ssh first on PATH that runs the real one with config
// as the person's ssh configuration instead of the tester's own
// ~/.ssh/config, and without their agent. It returns the config file,
// which tests may rewrite. BatchMode: a test must never wait for an
// answer at the tester's terminal.
func personSSH(t *testing.T, real, config string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(cfg, []byte("BatchMode yes\n"+config), 0o600); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nunset SSH_AUTH_SOCK\nexec '" + real + "' -F '" + cfg + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cfg
}

// mfaBrowser plays alice at the browser: password, then (once she has MFA)
// a code from her authenticator.
type mfaBrowser struct {
	issuer string
	mu     sync.Mutex
	secret string
	last   *http.Client // the last login's browser
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
	b.mu.Lock()
	b.last = c
	b.mu.Unlock()
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
	issuer := newGatewayServer(t, nil)
	sshPort := startGatewayBinary(t, issuer)
	personSSH(t, realSSH, "")
	b := &mfaBrowser{issuer: issuer}
	_, run, mustRun := gatewayCLI(t, issuer, sshPort, b)

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

// gatewayCLI runs stepup, without a terminal, configured for issuer and
// the gateway at sshPort, logging in through b.
func gatewayCLI(t *testing.T, issuer string, sshPort int, b *mfaBrowser) (dir string, run, mustRun func(args ...string) result) {
	dir = t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "stepup"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(fileConfig{URL: issuer, SSHHost: "127.0.0.1", SSHPort: sshPort})
	if err := os.WriteFile(filepath.Join(dir, "stepup", "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	run = func(args ...string) result {
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
	mustRun = func(args ...string) result {
		t.Helper()
		r := run(args...)
		if r.code != 0 {
			t.Fatalf("stepup %s exited %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		return r
	}
	return dir, run, mustRun
}

// TestSSHAfterRevocation: signing out of the browser revokes the
// certificates of its logins, and the CLI's tokens stay good: stepup ssh,
// refused by the gateway, gets a new certificate for the same login by
// itself. Revoking the grant ends the tokens too: the server refuses a new
// certificate, and without a terminal the CLI says to log in again.
func TestSSHAfterRevocation(t *testing.T) {
	realSSH := testenv.Require(t, "ssh", "openssh-client")
	issuer := newGatewayServer(t, func(c *authz.Config) { c.Orgs[0].MFARequired = false })
	sshPort := startGatewayBinary(t, issuer)
	personSSH(t, realSSH, "")
	b := &mfaBrowser{issuer: issuer}
	dir, run, mustRun := gatewayCLI(t, issuer, sshPort, b)
	mustRun("login")
	if r := mustRun("ssh", e2eService, "whoami"); r.stdout != "alice "+e2eService+"\n" {
		t.Fatalf("ssh whoami printed %q (stderr %q)", r.stdout, r.stderr)
	}
	cert := func() string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "stepup", "id_ed25519-cert.pub"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	first := cert()
	// untilRevoked runs ssh until the gateway's refresh of the list
	// (every 1 s, --revocation-refresh) refuses the certificate: until
	// then the old one still works.
	untilRevoked := func(ssh func(...string) result) result {
		t.Helper()
		for range 40 {
			if r := ssh("ssh", e2eService, "whoami"); r.code != 0 || strings.Contains(r.stderr, "revoked") {
				return r
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Fatal("the gateway never refused the revoked certificate")
		return result{}
	}

	b.signOut(t)
	r := untilRevoked(mustRun)
	if !strings.Contains(r.stderr, "The server revoked this SSH certificate; asking for a new one.") || r.stdout != "alice "+e2eService+"\n" {
		t.Fatalf("after signing out of the browser: stdout %q, stderr:\n%s", r.stdout, r.stderr)
	}
	if cert() == first {
		t.Error("the certificate was not replaced")
	}

	// RFC 7009: the grant, with its access and refresh tokens.
	resp, err := http.PostForm(issuer+"/oauth2/revoke", url.Values{"client_id": {DefaultClientID}, "token": {storedIn(t, dir).RefreshToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %s", resp.Status)
	}
	r = untilRevoked(run)
	if r.code != ExitError || !strings.Contains(r.stderr, "The server revoked this SSH certificate") ||
		!strings.Contains(r.stderr, "run: stepup login") || r.stdout != "" {
		t.Fatalf("after the grant's revocation: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// signOut signs out of the browser session of the last login.
func (b *mfaBrowser) signOut(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	c := b.last
	b.mu.Unlock()
	if c == nil {
		t.Fatal("no browser session to sign out of")
	}
	_, page, err := readPage(c.Get(b.issuer + "/oauth2/logout"))
	if err != nil {
		t.Fatal(err)
	}
	resp, page, err := readPage(c.PostForm(b.issuer+"/oauth2/logout", formOf(page)))
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(page, "signed out") {
		t.Fatalf("sign out: %v %v\n%s", err, resp, page)
	}
}

// gatewayHostKey reads the host key a gateway keeps in its state
// directory.
func gatewayHostKey(t *testing.T, stateDir string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func knownHostsLine(host string, port int, key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(host, strconv.Itoa(port)))}, key) + "\n"
}

// TestSSHPinsGatewayHostKey: stepup ssh trusts a gateway's host key on
// first contact, keeps trusting it across the gateway's restarts, and
// refuses another key at the same address with ssh's own warning, unless
// the person's own ssh knows the host.
func TestSSHPinsGatewayHostKey(t *testing.T) {
	realSSH := testenv.Require(t, "ssh", "openssh-client")
	issuer := newGatewayServer(t, func(c *authz.Config) { c.Orgs[0].MFARequired = false })
	bin, gwConfig := buildGateway(t)
	port, state := testenv.FreePort(t), t.TempDir()
	stop := runGateway(t, bin, gwConfig, issuer, port, state)
	sshConfig := personSSH(t, realSSH, "")

	e := &cliEnv{t: t, issuer: issuer, dir: t.TempDir()}
	e.writeConfig(fileConfig{SSHHost: "127.0.0.1", SSHPort: port})
	e.mustRun("login")
	const whoami = "alice " + e2eService + "\n"
	if r := e.mustRun("ssh", e2eService, "whoami"); r.stdout != whoami {
		t.Fatalf("first contact: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	pins, err := knownhosts.New(filepath.Join(e.dir, "stepup", "known_hosts"))
	if err != nil {
		t.Fatalf("no pins after the first contact: %v", err)
	}
	if err := pins(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &net.TCPAddr{}, gatewayHostKey(t, state)); err != nil {
		t.Errorf("the CLI's known_hosts does not hold the gateway's key: %v", err)
	}

	stop()
	stop = runGateway(t, bin, gwConfig, issuer, port, state)
	if r := e.mustRun("ssh", e2eService, "whoami"); r.stdout != whoami {
		t.Fatalf("after a restart: stdout %q, stderr %q", r.stdout, r.stderr)
	}

	stop()
	other := t.TempDir()
	runGateway(t, bin, gwConfig, issuer, port, other)
	r := e.run("ssh", e2eService, "whoami")
	if r.code != 255 || r.stdout != "" || !strings.Contains(r.stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Fatalf("another host key at the same address: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}

	// The person's own known_hosts lists the host: their ssh decides, and
	// the CLI's stale pin is not consulted.
	theirs := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(theirs, []byte(knownHostsLine("127.0.0.1", port, gatewayHostKey(t, other))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sshConfig, []byte("BatchMode yes\nUserKnownHostsFile "+theirs+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.mustRun("ssh", e2eService, "whoami"); r.stdout != whoami {
		t.Fatalf("with the host in the person's known_hosts: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// TestPersonKnowsHost asks the real ssh -G, so the person's Host blocks,
// HostKeyAlias and hashed entries count as ssh itself counts them.
func TestPersonKnowsHost(t *testing.T) {
	realSSH := testenv.Require(t, "ssh", "openssh-client")
	dir := t.TempDir()
	key := gatewayHostKey(t, writeHostKey(t, dir))
	theirs := filepath.Join(dir, "known_hosts")
	hashed := knownhosts.Line([]string{knownhosts.HashHostname("gw.example.com")}, key) + "\n"
	if err := os.WriteFile(theirs, []byte(knownHostsLine("127.0.0.1", 2200, key)+hashed+knownHostsLine("gw-key", 22, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	personSSH(t, realSSH, "Host gw\n  HostName 127.0.0.1\n  Port 2200\nHost aliased\n  HostName 10.0.0.1\n  HostKeyAlias gw-key\n"+
		"Host *\n  UserKnownHostsFile "+theirs+"\n  GlobalKnownHostsFile /dev/null\n")
	for _, c := range []struct {
		dest []string
		want bool
	}{
		{[]string{"svc@gw"}, true},
		{[]string{"-p", "2200", "svc@127.0.0.1"}, true},
		{[]string{"svc@127.0.0.1"}, false},
		{[]string{"svc@gw.example.com"}, true},
		{[]string{"-p", "2222", "svc@gw.example.com"}, false},
		{[]string{"svc@aliased"}, true},
		{[]string{"svc@other.example.com"}, false},
	} {
		if got := personKnowsHost(context.Background(), c.dest); got != c.want {
			t.Errorf("%v: %v, want %v", c.dest, got, c.want)
		}
	}
}

// writeHostKey writes a fresh host key where a gateway's state directory
// keeps it.
func writeHostKey(t *testing.T, dir string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key"), pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

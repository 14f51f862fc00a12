package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/gateway"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/internal/testserver"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

const (
	service       = "abcdefg123456-main-bvxea6i--app"
	password      = "correct horse battery staple"
	gatewayID     = "stepup-gateway"
	gatewaySecret = "gateway-secret-0123456789abcdef"
	cliID         = "stepup-cli"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// gatewayBinary builds stepup-gateway once per test run, as people run it.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stepup-gateway-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "stepup-gateway")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startStepup runs the Stepup server in-process over real HTTP: alice owns
// acme, which requires MFA; bob belongs to no organization.
func startStepup(t *testing.T) string {
	t.Helper()
	hash, err := authz.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	return testserver.Start(t, authz.Config{
		Clients: []authz.Client{
			{ID: cliID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
				GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
				Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none"},
			{ID: gatewayID, SecretHash: authz.HashClientSecret(gatewaySecret), GrantTypes: []string{"client_credentials"},
				Scopes: []string{"access.read"}, TokenEndpointAuthMethod: "client_secret_basic"},
		},
		Users: []authz.User{
			{ID: "u_alice", Username: "alice", Email: "alice@example.com", PasswordHash: hash, EmailVerified: true},
			{ID: "u_bob", Username: "bob", Email: "bob@example.com", PasswordHash: hash, EmailVerified: true},
		},
		Orgs: []authz.Org{{ID: "acme", Name: "ACME", MFARequired: true, Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}},
	})
}

// process is a running stepup-gateway whose log is kept for failures.
type process struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	log   bytes.Buffer
	ready chan struct{}
	done  chan error
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startGateway starts the binary and waits until it listens.
func startGateway(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(gatewayBinary(t), args...), ready: make(chan struct{}), done: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		var once sync.Once
		for s.Scan() {
			p.mu.Lock()
			p.log.WriteString(s.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(s.Text(), "SSH gateway listening") {
				once.Do(func() { close(p.ready) })
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("stepup-gateway exited with %v after SIGINT", err)
			}
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Errorf("stepup-gateway did not stop within 10s of SIGINT")
		}
		if t.Failed() {
			t.Logf("stepup-gateway %v log:\n%s", args, p.output())
		}
	})
	select {
	case <-p.ready:
	case err := <-p.done:
		t.Fatalf("stepup-gateway exited at start: %v\n%s", err, p.output())
	case <-time.After(15 * time.Second):
		t.Fatalf("stepup-gateway did not start within 15s\n%s", p.output())
	}
	return p
}

// browser is a cookie-keeping HTTP client that stops at the redirect back
// to the CLI's loopback address.
type browser struct {
	t      *testing.T
	c      *http.Client
	issuer string
}

func newBrowser(t *testing.T, issuer string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, issuer: issuer, c: &http.Client{
		Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if !strings.HasPrefix(req.URL.String(), issuer+"/") {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}}
}

func (b *browser) send(method, u string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, string(page)
}

var hiddenField = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// fields are the hidden fields of the page's forms (CSRF token, challenge).
func fields(page string) url.Values {
	v := url.Values{}
	for _, m := range hiddenField.FindAllStringSubmatch(page, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// login runs the CLI's login (authorization code with PKCE, password
// form, and the code page when the account has MFA) and returns the access
// token.
func (b *browser) login(username, otpSecret string) string {
	b.t.Helper()
	cfg := &oauth2.Config{
		ClientID: cliID, RedirectURL: "http://127.0.0.1:53682/callback",
		Scopes:   []string{"openid", "offline_access", "profile", "email"},
		Endpoint: oauth2.Endpoint{AuthURL: b.issuer + "/oauth2/authorize", TokenURL: b.issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	verifier := oauth2.GenerateVerifier()
	resp, page := b.send(http.MethodGet, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)), nil)
	if resp.Request.URL.Path != "/login" {
		b.t.Fatalf("want the login page, got %d at %s", resp.StatusCode, resp.Request.URL)
	}
	form := fields(page)
	form.Set("username", username)
	form.Set("password", password)
	resp, page = b.send(http.MethodPost, b.issuer+"/login", form)
	if resp.Request.URL.Path == "/login/otp" {
		if otpSecret == "" {
			b.t.Fatal("asked for a code without MFA")
		}
		form = fields(page)
		// The enrollment used the current step, and a step counts once.
		form.Set("code", totpCode(b.t, otpSecret, time.Now().Add(30*time.Second)))
		resp, page = b.send(http.MethodPost, b.issuer+"/login/otp", form)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		b.t.Fatalf("login did not end with a code: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), page)
	}
	tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		b.t.Fatal(err)
	}
	return tok.AccessToken
}

var secretOnPage = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)

// enrollMFA turns MFA on through the account pages and returns the TOTP
// secret. The browser must be logged in.
func (b *browser) enrollMFA() string {
	b.t.Helper()
	_, page := b.send(http.MethodGet, b.issuer+"/account/security", nil)
	_, page = b.send(http.MethodPost, b.issuer+"/account/security/setup", fields(page))
	m := secretOnPage.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no TOTP secret on the setup page: %s", page)
	}
	form := fields(page)
	form.Set("code", totpCode(b.t, m[1], time.Now()))
	if _, page = b.send(http.MethodPost, b.issuer+"/account/security/verify", form); !strings.Contains(page, "Multi-factor authentication is on") {
		b.t.Fatalf("MFA not on after Verify & save: %s", page)
	}
	return m[1]
}

// newKey makes an Ed25519 key pair with ssh-keygen and returns the path of
// the private key.
func newKey(t *testing.T, dir, name string) string {
	t.Helper()
	key := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return key
}

// certify asks the server for a certificate of key's public half, as the
// CLI does, and stores it beside the key where ssh looks for it.
func certify(t *testing.T, issuer, token, key string) {
	t.Helper()
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"key": string(pub)})
	req, _ := http.NewRequest(http.MethodPost, issuer+"/ssh", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Certificate string `json:"certificate"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Certificate == "" {
		t.Fatalf("POST /ssh: %d %v", resp.StatusCode, err)
	}
	if err := os.WriteFile(key+"-cert.pub", []byte(out.Certificate+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sshOptions make ssh use exactly key (and its certificate, if there is
// one) and nothing from the person running the tests.
func sshOptions(port, key string) []string {
	opts := []string{"-F", "none", "-p", port, "-i", key, "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=10"}
	if _, err := os.Stat(key + "-cert.pub"); err == nil {
		opts = append(opts, "-o", "CertificateFile="+key+"-cert.pub")
	}
	return opts
}

// hermetic is the environment for ssh and git: no agent, no personal git
// configuration.
func hermetic() []string {
	return append(os.Environ(), "SSH_AUTH_SOCK=", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com",
		"GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
}

type result struct {
	stdout, stderr string
	code           int
}

// sshRun runs the real OpenSSH client as login@127.0.0.1 with command.
func sshRun(t *testing.T, port, key, login string, command ...string) result {
	t.Helper()
	return sshWith(t, sshOptions(port, key), login, command...)
}

func sshWith(t *testing.T, opts []string, login string, command ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(slices.Clone(opts), login+"@127.0.0.1")
	cmd := exec.CommandContext(ctx, "ssh", append(args, command...)...)
	cmd.Env = hermetic()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("ssh %v: %v", command, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("ssh %v did not finish within 30s", command)
	}
	return result{out.String(), errOut.String(), code}
}

// greeted reads what the gateway first sends on c: true for its SSH
// banner, false when it hangs up without one.
func greeted(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case err == nil:
		if !strings.HasPrefix(line, "SSH-2.0-") {
			t.Fatalf("the gateway greeted with %q", line)
		}
		return true
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("the gateway neither greeted nor hung up within 10s")
	}
	return false
}

func git(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestGateway runs the built gateway against a real Stepup server and
// drives it with the real ssh and git, as people would.
func TestGateway(t *testing.T) {
	testenv.Require(t, "ssh", "openssh-client")
	testenv.Require(t, "ssh-keygen", "openssh-client")
	testenv.Require(t, "git", "git")
	issuer := startStepup(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "stepup.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`# the keys stepup-gateway reads
services:
  - id: %s
    org: acme
gateway: {client_id: %s, client_secret: %q}
`, service, gatewayID, gatewaySecret)), 0o600); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(testenv.FreePort(t))
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	hostKey := newKey(t, dir, "host")
	startGateway(t, "--issuer", issuer, "--config", cfgPath, "--ssh-addr", "127.0.0.1:"+port,
		"--http-addr", httpAddr, "--host-key", hostKey, "--git-root", filepath.Join(dir, "repos"))

	const (
		whoami   = "alice " + service + "\n"
		noAccess = "Error: The service doesn't exist or you do not have access to it.\n"
	)
	alice := newBrowser(t, issuer)
	aliceKey := newKey(t, dir, "alice")

	t.Run("fail/password-only-needs-mfa", func(t *testing.T) {
		certify(t, issuer, alice.login("alice", ""), aliceKey)
		got := sshRun(t, port, aliceKey, service, "whoami")
		want := result{"", "Error: Access denied\n" +
			"Service: " + service + "\n" +
			"User: alice (u_alice)\n" +
			`Parameters: {"amr":["mfa"]}` + "\n" +
			"Detail: Additional authentication is required:\n" +
			"\t - Multi-factor authentication (MFA)\n", 1}
		if got != want {
			t.Fatalf("got  %#v\nwant %#v", got, want)
		}
	})

	t.Run("ok/after-mfa", func(t *testing.T) {
		secret := alice.enrollMFA()
		certify(t, issuer, newBrowser(t, issuer).login("alice", secret), aliceKey)
		if got := sshRun(t, port, aliceKey, service, "whoami"); got != (result{whoami, "", 0}) {
			t.Errorf("whoami: %#v", got)
		}
		if got := sshRun(t, port, aliceKey, service, "echo", "hello", "world"); got != (result{"hello world\n", "", 0}) {
			t.Errorf("echo: %#v", got)
		}
		if got := sshRun(t, port, aliceKey, service); got.code != 0 || !strings.Contains(got.stdout, "alice "+service) {
			t.Errorf("shell: %#v", got)
		}
		if got := sshRun(t, port, aliceKey, service, "ls"); got.code != 127 || !strings.Contains(got.stderr, "unknown command") {
			t.Errorf("ls: %#v", got)
		}
	})

	t.Run("fail/not-a-member", func(t *testing.T) {
		bobKey := newKey(t, dir, "bob")
		certify(t, issuer, newBrowser(t, issuer).login("bob", ""), bobKey)
		want := result{"", noAccess + "Service: " + service + "\nUser: bob (u_bob)\n", 1}
		if got := sshRun(t, port, bobKey, service, "whoami"); got != want {
			t.Fatalf("got  %#v\nwant %#v", got, want)
		}
	})

	t.Run("fail/unknown-service", func(t *testing.T) {
		want := result{"", noAccess + "Service: nosuchservice\nUser: alice (u_alice)\n", 1}
		if got := sshRun(t, port, aliceKey, "nosuchservice", "whoami"); got != want {
			t.Fatalf("got  %#v\nwant %#v", got, want)
		}
	})

	t.Run("fail/not-a-stepup-certificate", func(t *testing.T) {
		plain := newKey(t, dir, "plain")
		forged := newKey(t, dir, "forged")
		forgeCertificate(t, forged, issuer)
		for _, key := range []string{plain, forged} {
			got := sshRun(t, port, key, service, "whoami")
			if got.code != 255 || !strings.Contains(got.stderr, "Permission denied (publickey)") || got.stdout != "" {
				t.Errorf("%s: %#v", filepath.Base(key), got)
			}
		}
	})

	t.Run("ok/git-push-then-clone", func(t *testing.T) {
		env := append(hermetic(), "GIT_SSH_COMMAND=ssh "+shellQuote(sshOptions(port, aliceKey)))
		work := filepath.Join(dir, "work")
		git(t, dir, env, "init", "--quiet", "--initial-branch=main", work)
		if err := os.WriteFile(filepath.Join(work, "README"), []byte("pushed through the gateway\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		git(t, work, env, "add", "README")
		git(t, work, env, "commit", "--quiet", "-m", "first")
		pushed := git(t, work, env, "rev-parse", "HEAD")
		git(t, work, env, "push", "--quiet", service+"@127.0.0.1:repo.git", "main")

		// Whatever path git asks for, the service has one repository.
		clone := filepath.Join(dir, "clone")
		git(t, dir, env, "clone", "--quiet", service+"@127.0.0.1:/some/other/path.git", clone)
		if got := git(t, clone, env, "rev-parse", "HEAD"); got != pushed {
			t.Errorf("clone is at %s, pushed %s", got, pushed)
		}
		if b, err := os.ReadFile(filepath.Join(clone, "README")); err != nil || string(b) != "pushed through the gateway\n" {
			t.Errorf("README in the clone: %q %v", b, err)
		}
	})

	t.Run("ok/survives-bad-connections", func(t *testing.T) {
		var bad []net.Conn
		for _, junk := range []string{
			"",                                  // says nothing
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n", // not SSH at all
			"SSH-2.0-junk\r\n\xff\xff\xff\xff\x07garbage", // a banner, then nonsense
		} {
			c, err := net.Dial("tcp", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write([]byte(junk))
			bad = append(bad, c)
		}
		// Nonsense after the banner is hung up on at once; the others wait
		// for the handshake timeout, and meanwhile everyone else is served.
		_ = bad[2].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(bad[2]); err != nil {
			t.Errorf("the gateway did not hang up on a bad packet: %v", err)
		}
		if got := sshRun(t, port, aliceKey, service, "whoami"); got != (result{whoami, "", 0}) {
			t.Errorf("after bad connections: %#v", got)
		}
	})

	t.Run("ok/host-key", func(t *testing.T) {
		knownHosts := func(pubFile string) []string {
			pub, err := os.ReadFile(pubFile)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "known_hosts")
			if err := os.WriteFile(path, []byte("[127.0.0.1]:"+port+" "+string(pub)), 0o600); err != nil {
				t.Fatal(err)
			}
			// ssh takes the first value given for an option.
			return append([]string{"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + path}, sshOptions(port, aliceKey)...)
		}
		if got := sshWith(t, knownHosts(hostKey+".pub"), service, "whoami"); got != (result{whoami, "", 0}) {
			t.Errorf("with the host key from --host-key known: %#v", got)
		}
		if got := sshWith(t, knownHosts(newKey(t, t.TempDir(), "other")+".pub"), service, "whoami"); got.code != 255 || !strings.Contains(got.stderr, "HOST IDENTIFICATION HAS CHANGED") {
			t.Errorf("with another host key known: %#v", got)
		}
	})

	t.Run("ok/idle-flood-from-one-address", func(t *testing.T) {
		// A gateway of its own, with the defaults, so that no earlier
		// connection from 127.0.0.1 is still being counted.
		floodPort := strconv.Itoa(testenv.FreePort(t))
		gw := startGateway(t, "--issuer", issuer, "--config", cfgPath, "--ssh-addr", "127.0.0.1:"+floodPort,
			"--host-key", hostKey, "--git-root", t.TempDir())
		// More idle sockets than the gateway has connection slots, from
		// one address.
		flood := make([]net.Conn, gateway.DefaultMaxConns+44)
		for i := range flood {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+floodPort, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			flood[i] = c
		}
		served := 0
		for _, c := range flood {
			if greeted(t, c) {
				served++
			}
		}
		if served != gateway.DefaultMaxPreAuthPerSource {
			t.Errorf("%d of %d idle connections from one address served, want %d", served, len(flood), gateway.DefaultMaxPreAuthPerSource)
		}
		// The flooding address is turned away, a real login included...
		if got := sshRun(t, floodPort, aliceKey, service, "whoami"); got.code != 255 || got.stdout != "" {
			t.Errorf("from the flooding address: %#v", got)
		}
		// ...while another one gets in.
		other := append([]string{"-o", "BindAddress=127.0.0.2"}, sshOptions(floodPort, aliceKey)...)
		if got := sshWith(t, other, service, "whoami"); got != (result{whoami, "", 0}) {
			t.Errorf("from 127.0.0.2: %#v", got)
		}
		// All those refusals came before that login, and were logged
		// once.
		deadline := time.Now().Add(10 * time.Second)
		for !regexp.MustCompile(`msg="SSH connection authenticated" remote=127\.0\.0\.2:`).MatchString(gw.output()) {
			if time.Now().After(deadline) {
				t.Fatalf("the login from 127.0.0.2 is not in the log:\n%s", gw.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := strings.Count(gw.output(), "too many unauthenticated SSH connections from one source"); n != 1 {
			t.Errorf("%d log lines about the refusals, want 1:\n%s", n, gw.output())
		}
	})

	t.Run("ok/idle-flood-from-many-addresses", func(t *testing.T) {
		floodPort := strconv.Itoa(testenv.FreePort(t))
		gw := startGateway(t, "--issuer", issuer, "--config", cfgPath, "--ssh-addr", "127.0.0.1:"+floodPort,
			"--host-key", hostKey, "--git-root", t.TempDir())
		// 39 addresses, each with as many idle sockets as it may have:
		// more than the gateway has connection slots.
		var flood []net.Conn
		for i := 2; i <= 40; i++ {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i))}, Timeout: 5 * time.Second}
			for range gateway.DefaultMaxPreAuthPerSource {
				c, err := d.Dial("tcp", "127.0.0.1:"+floodPort)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				flood = append(flood, c)
			}
		}
		if len(flood) <= gateway.DefaultMaxConns {
			t.Fatalf("a flood of %d is no flood", len(flood))
		}
		// Each is answered, with the banner or by hanging up, once
		// accepted.
		for _, c := range flood {
			greeted(t, c)
		}
		// Someone from yet another address gets in while they are held.
		other := append([]string{"-o", "BindAddress=127.0.0.41"}, sshOptions(floodPort, aliceKey)...)
		if got := sshWith(t, other, service, "whoami"); got != (result{whoami, "", 0}) {
			t.Errorf("from 127.0.0.41: %#v", got)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !regexp.MustCompile(`msg="SSH connection authenticated" remote=127\.0\.0\.41:`).MatchString(gw.output()) {
			if time.Now().After(deadline) {
				t.Fatalf("the login from 127.0.0.41 is not in the log:\n%s", gw.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The flood's displaced connections: one line. Nobody refused.
		if n := strings.Count(gw.output(), "too many unauthenticated SSH connections; closing the longest-waiting one"); n != 1 {
			t.Errorf("%d log lines about displaced connections, want 1:\n%s", n, gw.output())
		}
		if n := strings.Count(gw.output(), "too many SSH connections;") + strings.Count(gw.output(), "from one source"); n != 0 {
			t.Errorf("%d log lines about refusals, want none:\n%s", n, gw.output())
		}
	})

	t.Run("ok/healthz", func(t *testing.T) {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "ok\n" {
			t.Errorf("/healthz: %d %q", resp.StatusCode, b)
		}
	})
}

// TestHTTPAPI runs the built gateway's HTTP API against a real Stepup
// server, with access tokens from real logins.
func TestHTTPAPI(t *testing.T) {
	issuer := startStepup(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "stepup.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`services:
  - id: %s
    org: acme
gateway: {client_id: %s, client_secret: %q}
`, service, gatewayID, gatewaySecret)), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	startGateway(t, "--issuer", issuer, "--config", cfgPath, "--ssh-addr", "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"--http-addr", httpAddr, "--git-root", filepath.Join(dir, "repos"), "--state-dir", filepath.Join(dir, "state"))
	project := "http://" + httpAddr + "/projects/" + service

	alice := newBrowser(t, issuer)
	t.Run("fail/password-only-needs-mfa", func(t *testing.T) {
		resp, body := apiGet(t, project, alice.login("alice", ""))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		challenge := resp.Header.Get("WWW-Authenticate")
		for _, want := range []string{`Bearer `, `error="insufficient_user_authentication"`, `amr="mfa"`} {
			if !strings.Contains(challenge, want) {
				t.Errorf("WWW-Authenticate %q lacks %s", challenge, want)
			}
		}
		var got struct {
			Error string   `json:"error"`
			AMR   []string `json:"amr"`
		}
		if err := json.Unmarshal(body, &got); err != nil || got.Error != "insufficient_user_authentication" || !slices.Equal(got.AMR, []string{"mfa"}) {
			t.Errorf("body %s: %v", body, err)
		}
	})

	t.Run("ok/after-mfa", func(t *testing.T) {
		secret := alice.enrollMFA()
		resp, body := apiGet(t, project, newBrowser(t, issuer).login("alice", secret))
		if resp.StatusCode != http.StatusOK || string(body) != `{"service":"`+service+`","org":"acme"}`+"\n" {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})

	t.Run("fail/not-a-member", func(t *testing.T) {
		resp, body := apiGet(t, project, newBrowser(t, issuer).login("bob", ""))
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"error":"not_found"`) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})

	t.Run("fail/no-token", func(t *testing.T) {
		resp, body := apiGet(t, project, "")
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	})
}

// apiGet calls the gateway's HTTP API as the CLI would, with token if any.
func apiGet(t *testing.T, u, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// forgeCertificate gives key a certificate that looks like Stepup's in
// every way but is signed by a CA of its own.
func forgeCertificate(t *testing.T, key, issuer string) {
	t.Helper()
	u, err := url.Parse(issuer)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ks, err := sshca.NewKeySet(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ks.Signer()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := sshca.New(sshca.Config{Domain: u.Hostname()}, signer)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	k, err := sshca.ParsePublicKey(string(pub))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(sshca.Request{PublicKey: k, UserID: "u_alice", Username: "alice", TokenID: "forged",
		TokenExpiry: now.Add(time.Hour), Claims: sshca.Claims{AMR: []string{"pwd", "otp", "mfa"}, AuthTime: now.Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		t.Fatal(err)
	}
}

// shellQuote joins args for GIT_SSH_COMMAND, which git runs through sh.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestConfigRefused: problems with the config file stop the start with the
// key and what is wrong.
func TestConfigRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		says       []string
	}{
		{"fail/typo", "servces: []\n", []string{`servces: unknown key; did you mean "services"?`}},
		{"fail/missing-keys", "services:\n  - id: app\n  - id: app\n    org: acme\n  - id: ../etc\n    org: acme\n", []string{
			"gateway.client_id: is required", "gateway.client_secret: is required",
			"services[0].org: is required", `services[1].id: "app" is listed twice`, `services[2].id: service id "../etc" must be`,
		}},
		{"fail/no-services", "gateway: {client_id: a, client_secret: b}\n", []string{"services: lists no service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, "/", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(gatewayBinary(t), "--issuer", "http://127.0.0.1:1", "--config", path, "--ssh-addr", "127.0.0.1:0")
			out, err := cmd.CombinedOutput()
			if exit, ok := errors.AsType[*exec.ExitError](err); !ok || exit.ExitCode() != 1 {
				t.Fatalf("exit %v, want status 1; output:\n%s", err, out)
			}
			for _, s := range tc.says {
				if !strings.Contains(string(out), s) {
					t.Errorf("output does not say %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestReadHostKey(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, block *pem.Block, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	block, err := ssh.MarshalPrivateKey(priv, "host")
	plain := write("plain", block, err)
	block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "host", []byte("secret"))
	locked := write("locked", block, err)

	if k, err := readHostKey(plain); err != nil || k.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("plain key: %v", err)
	}
	if k, err := readHostKey(""); k != nil || err != nil {
		t.Errorf("no key: %v %v", k, err)
	}
	if _, err := readHostKey(locked); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("encrypted key: %v", err)
	}
	if _, err := readHostKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// stepupdBinary builds the real binary once per test run.
func stepupdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stepupd-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "stepupd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// process is a running stepupd whose output is kept for failure messages.
type process struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out strings.Builder
	// lines receives stdout lines as they come.
	lines chan string
}

func start(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(stepupdBinary(t), args...), lines: make(chan string, 100)}
	p.cmd.Env = append(os.Environ(), env...)
	stdout, _ := p.cmd.StdoutPipe()
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.keep(s.Text())
			select {
			case p.lines <- s.Text():
			default:
			}
		}
	}()
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			p.keep(s.Text())
		}
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Errorf("stepupd did not stop within 10s of SIGINT")
		}
		if t.Failed() {
			t.Logf("stepupd %v output:\n%s", args, p.output())
		}
	})
	return p
}

func (p *process) keep(line string) {
	p.mu.Lock()
	p.out.WriteString(line + "\n")
	p.mu.Unlock()
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", base)
}

// browserLogin runs the authorization request at authURL, logs in on the
// page served by loginBase, and returns the code.
func browserLogin(t *testing.T, authURL, loginBase, username, password string) string {
	t.Helper()
	w := newWebClient(t, loginBase)
	p := w.get(authURL)
	if p.hidden.Get("csrf_token") == "" || p.hidden.Get("challenge") == "" {
		t.Fatalf("no login form at %s (%d): %s", p.url, p.status, p.body)
	}
	p = w.submit(p, "/login", url.Values{"username": {username}, "password": {password}})
	if p.url.Query().Get("code") == "" {
		t.Fatalf("login did not come back with a code: %d at %s", p.status, p.url)
	}
	return p.url.Query().Get("code")
}

func cli(issuer, tokenBase string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: "stepup-cli", RedirectURL: "http://127.0.0.1:53682/callback",
		Scopes: []string{"openid", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: issuer + "/oauth2/authorize", TokenURL: tokenBase + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams},
	}
}

// TestDevModeAsANewcomerRunsIt starts `stepupd --dev`, reads the printed
// password, and logs in with it.
func TestDevModeAsANewcomerRunsIt(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := start(t, nil, "--dev", "--addr", addr)
	base := "http://" + addr
	var password string
	timeout := time.After(15 * time.Second)
	for password == "" {
		select {
		case line := <-p.lines:
			if _, rest, ok := strings.Cut(line, "password: "); ok {
				password = strings.Fields(rest)[0]
			}
		case <-timeout:
			t.Fatalf("no password printed:\n%s", p.output())
		}
	}
	waitReady(t, base)
	var disc map[string]any
	resp, err := http.Get(base + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&disc)
	resp.Body.Close()
	if disc["issuer"] != base {
		t.Fatalf("issuer = %v, want %s", disc["issuer"], base)
	}
	cfg := cli(base, base)
	v := oauth2.GenerateVerifier()
	code := browserLogin(t, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), base, "alice", password)
	tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token = %+v", tok)
	}
}

// TestReplicasShareRedis runs two stepupd processes on one real Redis, as
// behind a load balancer: each step of a login may land on either.
func TestReplicasShareRedis(t *testing.T) {
	redisAddr := testenv.StartRedis(t)
	portA, portB := testenv.FreePort(t), testenv.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", portA)
	cfgFile := filepath.Join(t.TempDir(), "stepup.yaml")
	err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
issuer: %s
store: redis://%s/0
secret: replicas-share-this-secret
clients:
  - id: stepup-cli
    public: true
    redirect_uris: ["http://127.0.0.1/callback"]
    scopes: [openid, offline_access, profile, email]
  - id: svc
    secret: svc-secret-0123456789
    grant_types: [client_credentials]
users:
  - id: u_alice
    username: alice
    email: alice@example.com
    password: alice-password-1
`, issuer, redisAddr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	a := fmt.Sprintf("http://127.0.0.1:%d", portA)
	b := fmt.Sprintf("http://127.0.0.1:%d", portB)
	start(t, nil, "--config", cfgFile, "--addr", a[len("http://"):])
	start(t, nil, "--config", cfgFile, "--addr", b[len("http://"):])
	waitReady(t, a)
	waitReady(t, b)

	// Both publish the same keys.
	jwks := func(base string) string {
		resp, err := http.Get(base + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if ka, kb := jwks(a), jwks(b); ka != kb {
		t.Fatalf("replicas publish different keys:\n%s\n%s", ka, kb)
	}

	// Log in on A, exchange on B.
	ctx := context.Background()
	onB := cli(issuer, b)
	v := oauth2.GenerateVerifier()
	code := browserLogin(t, onB.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), a, "alice", "alice-password-1")
	tok1, err := onB.Exchange(ctx, code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatalf("exchange on the other replica: %v", err)
	}
	onA := cli(issuer, a)
	// Refresh on A, then reuse the old refresh token on B: the family dies
	// on both.
	tok2, err := onA.TokenSource(ctx, &oauth2.Token{RefreshToken: tok1.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh on A of a token from B: %v", err)
	}
	if _, err := onB.TokenSource(ctx, &oauth2.Token{RefreshToken: tok1.RefreshToken}).Token(); err == nil {
		t.Fatal("reuse of a rotated refresh token on B succeeded")
	}
	if _, err := onA.TokenSource(ctx, &oauth2.Token{RefreshToken: tok2.RefreshToken}).Token(); err == nil {
		t.Fatal("after reuse was detected on B, the newest refresh token still works on A")
	}

	// A code redeemed on one replica is spent on the other, and replaying
	// it revokes what it issued there too.
	v = oauth2.GenerateVerifier()
	code = browserLogin(t, onA.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), b, "alice", "alice-password-1")
	tok3, err := onA.Exchange(ctx, code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onB.Exchange(ctx, code, oauth2.VerifierOption(v)); err == nil {
		t.Fatal("a code redeemed on A was accepted again on B")
	}
	if _, err := onA.TokenSource(ctx, &oauth2.Token{RefreshToken: tok3.RefreshToken}).Token(); err == nil {
		t.Fatal("the refresh token of a replayed code still works")
	}

	// rotate-keys works on the shared store: a replica started afterwards
	// signs with the new current key, which the running replicas published
	// before the rotation (they still serve their cached key set), and
	// publishes the new next keys beside the retired ones.
	before := jwks(a)
	out, err := exec.Command(stepupdBinary(t), "rotate-keys", "--config", cfgFile).CombinedOutput()
	if err != nil {
		t.Fatalf("rotate-keys: %v\n%s", err, out)
	}
	c := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	start(t, nil, "--config", cfgFile, "--addr", c)
	waitReady(t, "http://"+c)
	var set struct {
		Keys []struct{ Kid string } `json:"keys"`
	}
	after := jwks("http://" + c)
	if err := json.Unmarshal([]byte(after), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 6 || after == before {
		t.Fatalf("after rotation, want 2 current, 2 next and 2 retired keys; before %s, after %s", before, after)
	}
	cc := clientcredentials.Config{ClientID: "svc", ClientSecret: "svc-secret-0123456789", TokenURL: "http://" + c + "/oauth2/token"}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	header, _, _ := strings.Cut(tok.AccessToken, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(header)
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil || h.Kid == "" {
		t.Fatalf("access token header %s: %v", raw, err)
	}
	if !strings.Contains(before, h.Kid) || !strings.Contains(jwks(b), h.Kid) {
		t.Fatalf("the rotated-in key %s was not published before the rotation, or B does not publish it:\nbefore %s\nB now %s", h.Kid, before, jwks(b))
	}
	var old struct {
		Keys []struct{ Kid string } `json:"keys"`
	}
	_ = json.Unmarshal([]byte(before), &old)
	for _, k := range old.Keys {
		if !strings.Contains(after, k.Kid) {
			t.Errorf("retired key %s is no longer published", k.Kid)
		}
	}
}

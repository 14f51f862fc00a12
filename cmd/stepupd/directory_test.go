package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestDirectoryOnRedisAcrossReplicasAndRestarts: run-time changes to
// people and organizations made on one replica are seen by another at
// once, and a restart of every replica, with the same config seeding the
// same store, keeps them rather than undoing them.
func TestDirectoryOnRedisAcrossReplicasAndRestarts(t *testing.T) {
	redisAddr := testenv.StartRedis(t)
	portA, portB, portC := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", portA)
	cfgFile := filepath.Join(t.TempDir(), "stepup.yaml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
issuer: %s
store: redis://%s/0
secret: replicas-share-this-secret
clients:
  - id: stepup-cli
    public: true
    redirect_uris: ["http://127.0.0.1/callback"]
    scopes: [openid, offline_access, profile, email]
users:
  - id: u_alice
    username: alice
    email: alice@example.com
    password: alice-password-1
orgs:
  - id: seeded
    name: Seeded
    members: [{user: u_alice, role: owner}]
`, issuer, redisAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b, c := fmt.Sprintf("127.0.0.1:%d", portA), fmt.Sprintf("127.0.0.1:%d", portB), fmt.Sprintf("127.0.0.1:%d", portC)
	pa := start(t, nil, "--config", cfgFile, "--addr", a)
	pb := start(t, nil, "--config", cfgFile, "--addr", b)
	waitReady(t, "http://"+a)
	waitReady(t, "http://"+b)

	ctx := context.Background()
	login := func(base, password string) (*oauth2.Token, error) {
		cfg := cli(base, base)
		v := oauth2.GenerateVerifier()
		code := browserLogin(t, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), base, "alice", password)
		return cfg.Exchange(ctx, code, oauth2.VerifierOption(v))
	}
	call := func(method, u, token string, body any) (int, map[string]any) {
		t.Helper()
		var buf bytes.Buffer
		if body != nil {
			_ = json.NewEncoder(&buf).Encode(body)
		}
		req, _ := http.NewRequest(method, u, &buf)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}

	tokA, err := login("http://"+a, "alice-password-1")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := call("POST", "http://"+a+"/api/orgs", tokA.AccessToken, map[string]any{"id": "made-on-a", "name": "Made on A"}); status != 201 {
		t.Fatalf("creating an org on A: %d %v", status, body)
	}
	if status, body := call("PATCH", "http://"+a+"/api/orgs/seeded/security", tokA.AccessToken, map[string]any{"sso_provider": ""}); status != 200 {
		t.Fatalf("PATCH on A: %d %v", status, body)
	}
	// B sees it at once.
	if status, body := call("GET", "http://"+b+"/api/orgs/made-on-a", tokA.AccessToken, nil); status != 200 || body["name"] != "Made on A" {
		t.Fatalf("the org on B: %d %v", status, body)
	}
	// A password changed through B counts on A.
	if status, body := call("POST", "http://"+b+"/api/me/password", tokA.AccessToken,
		map[string]any{"current_password": "alice-password-1", "new_password": "alice-password-2"}); status != 204 {
		t.Fatalf("changing the password on B: %d %v", status, body)
	}
	if status, _ := call("GET", "http://"+a+"/api/me", tokA.AccessToken, nil); status != 401 {
		t.Fatalf("the token from before the change, on A: %d", status)
	}

	// Every replica stops; a new one starts on the same store and config.
	for _, p := range []*process{pa, pb} {
		_ = p.cmd.Process.Signal(os.Interrupt)
		_ = p.cmd.Wait()
	}
	start(t, nil, "--config", cfgFile, "--addr", c)
	waitReady(t, "http://"+c)
	// The seed's password did not come back; the run-time one works.
	w := newWebClient(t, "http://"+c)
	cfgC := cli("http://"+c, "http://"+c)
	p := w.get(cfgC.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if p = w.submit(p, "/login", url.Values{"username": {"alice"}, "password": {"alice-password-1"}}); p.status != http.StatusUnauthorized {
		t.Fatalf("the seeded password after a restart: %d at %s", p.status, p.url)
	}
	tokC, err := login("http://"+c, "alice-password-2")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := call("GET", "http://"+c+"/api/orgs/made-on-a", tokC.AccessToken, nil); status != 200 {
		t.Fatalf("the run-time org after a restart: %d %v", status, body)
	}
	if status, body := call("GET", "http://"+c+"/api/me", tokC.AccessToken, nil); status != 200 || len(body["orgs"].([]any)) != 2 {
		t.Fatalf("/api/me after a restart: %d %v", status, body)
	}
}

// TestDevModeInvitationStory is the newcomer's story on `stepupd --dev`,
// without editing a file: alice (the seeded user) creates an organization,
// invites a second person by email; with no SMTP, the mail is in the
// server's log, whose link the person opens to choose a password; they
// log in and are a member.
func TestDevModeInvitationStory(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := start(t, nil, "--dev", "--addr", addr)
	base := "http://" + addr
	var password string
	for password == "" {
		select {
		case line := <-p.lines:
			if _, rest, ok := strings.Cut(line, "password: "); ok {
				password = strings.Fields(rest)[0]
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("no password printed:\n%s", p.output())
		}
	}
	waitReady(t, base)
	ctx := context.Background()
	cfg := cli(base, base)
	v := oauth2.GenerateVerifier()
	tok, err := cfg.Exchange(ctx, browserLogin(t, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), base, "alice", password), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	post := func(path string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if status, body := post("/api/orgs", map[string]any{"id": "my-team", "name": "My team"}); status != 201 {
		t.Fatalf("creating an org: %d %v", status, body)
	}
	if status, body := post("/api/orgs/my-team/invitations", map[string]any{"email": "bob@example.com"}); status != 201 {
		t.Fatalf("inviting: %d %v", status, body)
	}
	link := regexp.MustCompile(`http://\S+/invite/stpi_[A-Za-z0-9_-]{43}`)
	// The log line is written before the answer, but reaches us through a
	// pipe that another goroutine reads: look until it has been read.
	var invite string
	for deadline := time.Now().Add(30 * time.Second); invite == ""; time.Sleep(20 * time.Millisecond) {
		invite = link.FindString(p.output())
		if invite == "" && time.Now().After(deadline) {
			t.Fatalf("no invitation link in the log:\n%s", p.output())
		}
	}
	w := newWebClient(t, base)
	page := w.get(invite)
	if page.status != 200 {
		t.Fatalf("the invitation page: %d %s", page.status, page.body)
	}
	page = w.submit(page, strings.TrimPrefix(invite, base), url.Values{"action": {"create"}, "username": {"bob"},
		"password": {"bob's own password"}, "password_again": {"bob's own password"}})
	if page.status != 200 || !strings.Contains(page.body, "You are now a member of My team") {
		t.Fatalf("accepting: %d %s", page.status, page.body)
	}
	v = oauth2.GenerateVerifier()
	bobTok, err := cfg.Exchange(ctx, browserLogin(t, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), base, "bob", "bob's own password"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", base+"/api/orgs/my-team", nil)
	req.Header.Set("Authorization", "Bearer "+bobTok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("bob reading his new org: %d", resp.StatusCode)
	}
}

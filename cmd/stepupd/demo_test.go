package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	stepupcli "github.com/stepup-dev/stepup/internal/cli"
	"github.com/stepup-dev/stepup/internal/config"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestDevSeedsTheStory: --dev's config validates and holds everything the
// README's walk uses: alice and a second person, an organization that
// requires MFA, a service behind the gateway with its address, and the
// gateway's client.
func TestDevSeedsTheStory(t *testing.T) {
	cfg, d, err := loadConfig(options{dev: true, addr: "127.0.0.1:18080"}, nil)
	if err != nil {
		t.Fatalf("--dev's config does not validate: %v", err)
	}
	if d.password == "" || d.memberPassword == "" || d.serviceSecret == "" || d.gatewaySecret == "" {
		t.Errorf("a secret to print is missing: %+v", d)
	}
	users := map[string]config.User{}
	for _, u := range cfg.Users {
		users[u.Username] = u
	}
	if users["alice"].Password != d.password || users["carol"].Password != d.memberPassword || users["carol"].ID == "" {
		t.Errorf("users = %+v", cfg.Users)
	}
	orgs := map[string]config.Org{}
	for _, o := range cfg.Orgs {
		orgs[o.ID] = o
	}
	alice, carol := users["alice"].ID, users["carol"].ID
	if o := orgs["demo"]; o.MFARequired || !slices.Equal(o.Members, []config.Member{{User: alice, Role: "owner"}, {User: carol, Role: "member"}}) {
		t.Errorf("demo = %+v", o)
	}
	if o := orgs["acme"]; !o.MFARequired || o.Name != "ACME" ||
		!slices.Equal(o.Members, []config.Member{{User: alice, Role: "owner"}, {User: carol, Role: "member"}}) {
		t.Errorf("acme = %+v", o)
	}
	if want := []config.Service{{ID: "demo-repo", Org: "acme", SSHAddress: "127.0.0.1:2222"}}; !slices.Equal(cfg.Services, want) {
		t.Errorf("services = %+v, want %+v", cfg.Services, want)
	}
	if cfg.Gateway.ClientID != "stepup-gateway" || cfg.Gateway.ClientSecret != d.gatewaySecret {
		t.Errorf("gateway = %+v", cfg.Gateway)
	}
	i := slices.IndexFunc(cfg.Clients, func(c config.Client) bool { return c.ID == cfg.Gateway.ClientID })
	if i < 0 {
		t.Fatalf("no client %s", cfg.Gateway.ClientID)
	}
	if c := cfg.Clients[i]; c.Public || c.Secret != cfg.Gateway.ClientSecret ||
		!slices.Equal(c.GrantTypes, []string{"client_credentials"}) || !slices.Contains(c.Scopes, "access.read") {
		t.Errorf("the gateway's client: %+v", c)
	}
}

// TestDevSeedKeepsTheConfigsOwn: what the config already has is neither
// repeated nor changed, and its secrets are not printed as if --dev had
// made them up.
func TestDevSeedKeepsTheConfigsOwn(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		check      func(t *testing.T, cfg *config.Config, d *demo)
	}{
		{
			name: "ok/all-of-it",
			file: `
users:
  - {id: u_a, username: alice, email: a@example.com, password: alice-password-1}
  - {id: u_c, username: carol, email: c@example.com, password: carol-password-1}
orgs:
  - {id: acme, name: Acme Inc, members: [{user: u_c, role: owner}]}
clients:
  - {id: gw, secret: gw-secret-0123456789, grant_types: [client_credentials], scopes: [access.read]}
services:
  - {id: demo-repo, org: acme, ssh_address: 'gw.example.com:22'}
gateway: {client_id: gw, client_secret: gw-secret-0123456789}
`,
			check: func(t *testing.T, cfg *config.Config, d *demo) {
				if len(cfg.Users) != 2 || len(cfg.Orgs) != 1 || len(cfg.Services) != 1 {
					t.Errorf("seeded more: users %+v orgs %+v services %+v", cfg.Users, cfg.Orgs, cfg.Services)
				}
				if o := cfg.Orgs[0]; o.Name != "Acme Inc" || o.MFARequired || len(o.Members) != 1 {
					t.Errorf("acme changed: %+v", o)
				}
				if d.password != "" || d.memberPassword != "" {
					t.Errorf("would print passwords the config set: %+v", d)
				}
				if d.sshAddr != "gw.example.com:22" || cfg.Gateway.ClientID != "gw" || d.gatewayID != "gw" || d.gatewaySecret != "gw-secret-0123456789" {
					t.Errorf("the config's gateway: %+v, %+v", cfg.Gateway, d)
				}
				if slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.ID == "stepup-gateway" }) {
					t.Errorf("seeded a second gateway client")
				}
			},
		},
		{
			name: "ok/alice-only",
			file: "users: [{id: u_a, username: alice, email: a@example.com, password: alice-password-1}]\n",
			check: func(t *testing.T, cfg *config.Config, d *demo) {
				// No demo organization (as before), but acme with the
				// config's alice as owner, and carol.
				i := slices.IndexFunc(cfg.Orgs, func(o config.Org) bool { return o.ID == "acme" })
				if len(cfg.Orgs) != 1 || i < 0 || !slices.Equal(cfg.Orgs[i].Members, []config.Member{{User: "u_a", Role: "owner"}, {User: "u_carol", Role: "member"}}) {
					t.Errorf("orgs = %+v", cfg.Orgs)
				}
				if d.password != "" || d.memberPassword == "" {
					t.Errorf("passwords to print: %+v", d)
				}
			},
		},
		{
			// A gateway client of the config's, secret known only by its
			// hash: there is no gateway command to print.
			name: "ok/gateway-client-without-secret",
			file: "clients: [{id: stepup-gateway, secret_hash: " + strings.Repeat("ab", 32) + ", grant_types: [client_credentials], scopes: [access.read]}]\n",
			check: func(t *testing.T, cfg *config.Config, d *demo) {
				if cfg.Gateway != (config.Gateway{}) || d.gatewayID != "" {
					t.Errorf("gateway = %+v, demo %+v", cfg.Gateway, d)
				}
				var out bytes.Buffer
				d.print(&out, cfg)
				if strings.Contains(out.String(), "stepup-gateway --issuer") || !strings.Contains(out.String(), "no\nstepup-gateway command to print") {
					t.Errorf("printed:\n%s", out.String())
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "stepup.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, d, err := loadConfig(options{dev: true, configPath: path}, nil)
			if err != nil {
				t.Fatalf("does not validate: %v", err)
			}
			tc.check(t, cfg, d)
		})
	}
}

// TestDevPrintedCommandsWork starts `stepupd --dev` and follows what it
// prints: the stepup-gateway command runs with the flags and keys printed
// and its client reads acme's policy; the service's address the server
// gives is the printed --ssh-addr; the stepup commands and ssh's options
// are ones the binaries take.
func TestDevPrintedCommandsWork(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := "http://" + addr
	p := start(t, nil, "--dev", "--addr", addr)
	var out string
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(out, "/settings/security\n"); time.Sleep(20 * time.Millisecond) {
		out = p.output()
		if time.Now().After(deadline) {
			t.Fatalf("the story was not printed:\n%s", out)
		}
	}
	waitReady(t, base)
	printed := printedCommands(out)
	gw := find(t, printed, "stepup-gateway")

	// The gateway's keys are its client at the server, reading policy as
	// the gateway does.
	env := map[string]string{}
	for _, kv := range gw.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	tok, err := (&clientcredentials.Config{ClientID: env["STEPUP_GATEWAY_CLIENT_ID"], ClientSecret: env["STEPUP_GATEWAY_CLIENT_SECRET"],
		TokenURL: base + "/oauth2/token", Scopes: []string{"access.read"}}).Token(context.Background())
	if err != nil {
		t.Fatalf("the printed gateway keys: %v", err)
	}
	var access struct {
		Member       bool
		Requirements struct{ AMR []string }
	}
	getJSON(t, base+"/api/orgs/acme/access/u_carol", tok.AccessToken, &access)
	if !access.Member || !slices.Equal(access.Requirements.AMR, []string{"mfa"}) {
		t.Errorf("carol in acme, as the gateway reads it: %+v", access)
	}

	// alice, with the printed password, learns where demo-repo's gateway
	// listens: where the printed command has it listen.
	password := field(t, out, "alice   password: ")
	cfg := cli(base, base)
	v := oauth2.GenerateVerifier()
	alice, err := cfg.Exchange(context.Background(), browserLogin(t, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)), base, "alice", password), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	var svc struct {
		Org        string
		SSHAddress string `json:"ssh_address"`
	}
	getJSON(t, base+"/api/services/demo-repo", alice.AccessToken, &svc)
	if svc.Org != "acme" || svc.SSHAddress != gw.flag(t, "--ssh-addr") || svc.SSHAddress != "127.0.0.1:2222" {
		t.Errorf("demo-repo: %+v; the gateway listens on %s", svc, gw.flag(t, "--ssh-addr"))
	}
	if gw.flag(t, "--issuer") != base {
		t.Errorf("the gateway trusts %s", gw.flag(t, "--issuer"))
	}

	// The gateway starts with what was printed. Only where it listens and
	// keeps repositories differs, so as not to meet another test (or a
	// gateway of the person's) on 2222; the host key goes to a state
	// directory of the test's.
	args := slices.Clone(gw.args)
	for flag, value := range map[string]string{"--ssh-addr": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--git-root": t.TempDir()} {
		gw.flag(t, flag)
		args[slices.Index(args, flag)+1] = value
	}
	gateway := exec.Command(buildCommand(t, "stepup-gateway"), args...)
	gateway.Env = append(os.Environ(), "XDG_STATE_HOME="+t.TempDir(), "STATE_DIRECTORY=")
	gateway.Env = append(gateway.Env, gw.env...)
	var logs syncBuffer
	gateway.Stdout, gateway.Stderr = &logs, &logs
	if err := gateway.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = gateway.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = gateway.Process.Signal(os.Interrupt)
		<-exited
	})
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "SSH gateway listening"); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("the printed stepup-gateway command exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the printed stepup-gateway command did not start:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "services=1") {
		t.Errorf("the gateway's log: %s", logs.String())
	}

	// The CLI takes the commands and flags printed.
	for _, c := range printed {
		if c.program != "stepup" {
			continue
		}
		var stdout, stderr bytes.Buffer
		app := &stepupcli.App{Stdout: &stdout, Stderr: &stderr}
		if code := app.Run(context.Background(), append(slices.Clone(c.args), "--help")); code != 0 || !strings.Contains(stdout.String(), "Usage:") {
			t.Errorf("stepup %s: exit %d\n%s%s", strings.Join(c.args, " "), code, stdout.String(), stderr.String())
		}
	}
	for _, want := range []string{"stepup login", "stepup ssh demo-repo whoami"} {
		if !slices.ContainsFunc(printed, func(c command) bool { return c.line == want }) {
			t.Errorf("%q was not printed", want)
		}
	}

	// ssh takes the options git is given; ssh -G fails on an unknown one.
	ssh := testenv.Require(t, "ssh", "openssh-client")
	i := slices.IndexFunc(printed, func(c command) bool { return strings.HasPrefix(c.line, `export GIT_SSH_COMMAND="ssh `) })
	if i < 0 {
		t.Fatalf("no GIT_SSH_COMMAND printed:\n%s", out)
	}
	opts := strings.TrimPrefix(printed[i].line, `export GIT_SSH_COMMAND="ssh `)
	dir := t.TempDir()
	opts = strings.ReplaceAll(strings.TrimSuffix(opts, `"`), "$c", dir)
	if b, err := exec.Command(ssh, append(append([]string{"-G"}, strings.Fields(opts)...), "demo-repo@127.0.0.1")...).CombinedOutput(); err != nil {
		t.Errorf("ssh -G %s: %v\n%s", opts, err, b)
	}
	for _, want := range []string{"git push ssh://demo-repo@127.0.0.1:2222/demo-repo.git HEAD:main",
		"git clone ssh://demo-repo@127.0.0.1:2222/demo-repo.git ../demo-repo-clone"} {
		if !slices.ContainsFunc(printed, func(c command) bool { return c.line == want }) {
			t.Errorf("%q was not printed", want)
		}
	}
}

// command is one printed shell command: NAME=value words, then the
// program and its arguments.
type command struct {
	line    string
	env     []string
	program string
	args    []string
}

func (c command) flag(t *testing.T, name string) string {
	t.Helper()
	i := slices.Index(c.args, name)
	if i < 0 || i+1 >= len(c.args) {
		t.Fatalf("%s has no %s", c.line, name)
	}
	return c.args[i+1]
}

// printedCommands reads the indented commands of --dev's output, joining
// lines continued with a backslash, and splits them into words as sh
// would (single quotes only, which is all the output uses).
func printedCommands(out string) []command {
	var cmds []command
	var cont string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cont += l
			continue
		}
		line, cont = cont+line, ""
		words := shellWords(line)
		c := command{line: line}
		for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
			c.env, words = append(c.env, words[0]), words[1:]
		}
		if len(words) == 0 {
			continue
		}
		c.program, c.args = words[0], words[1:]
		cmds = append(cmds, c)
	}
	return cmds
}

func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				words = append(words, w.String())
			}
			w.Reset()
			in = false
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

func find(t *testing.T, cmds []command, program string) command {
	t.Helper()
	for _, c := range cmds {
		if c.program == program {
			return c
		}
	}
	t.Fatalf("no %s command printed", program)
	return command{}
}

// field is the word after prefix in out.
func field(t *testing.T, out, prefix string) string {
	t.Helper()
	_, rest, ok := strings.Cut(out, prefix)
	if !ok {
		t.Fatalf("%q was not printed:\n%s", prefix, out)
	}
	return strings.Fields(rest)[0]
}

func getJSON(t *testing.T, url, token string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

var commandBuilds sync.Map // name → func() (string, error)

// buildCommand builds cmd/<name> once per test run.
func buildCommand(t *testing.T, name string) string {
	t.Helper()
	build, _ := commandBuilds.LoadOrStore(name, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "stepupd-demo-test")
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/stepup-dev/stepup/cmd/"+name).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
		}
		return bin, nil
	}))
	bin, err := build.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// syncBuffer is a bytes.Buffer that a process's output and a test may use
// at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

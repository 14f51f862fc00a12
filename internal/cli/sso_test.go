package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/internal/testserver"
)

const upstreamSecret = "upstream-client-secret-0123456789"

// federation is a Stepup server whose organization acme requires SSO
// through the provider acme, which is a second Stepup server, over real
// HTTP.
type federation struct {
	local, upstream string
	// skew moves the local server's clock forward.
	skew atomic.Int64
}

func newFederation(t *testing.T) *federation {
	t.Helper()
	f := &federation{upstream: newUpstream(t)}
	f.local = newGatewayServer(t, func(c *authz.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }
		c.SSOProviders = []authz.SSOProvider{{ID: "acme", Issuer: f.upstream, ClientID: "stepup",
			ClientSecret: upstreamSecret, MaxSessionAge: time.Hour}}
		c.Orgs = []authz.Org{{ID: "acme", Name: "ACME", SSOProvider: "acme",
			Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}}
	})
	return f
}

// newUpstream runs the provider. Cookies belong to a host, not a port,
// so it answers as localhost: on 127.0.0.1 its session cookie would
// replace the local server's in the person's browser.
func newUpstream(t *testing.T) string {
	t.Helper()
	return testserver.StartAs(t, "localhost", authz.Config{
		Secret: "upstream-secret-0123456789abcdef",
		Clients: []authz.Client{{ID: "stepup", SecretHash: authz.HashClientSecret(upstreamSecret),
			// Loopback: the local server's port is any port (RFC 8252).
			RedirectURIs: []string{"http://127.0.0.1/sso/acme/callback"},
			GrantTypes:   []string{"authorization_code"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "email", "profile"}, TokenEndpointAuthMethod: "client_secret_basic"}},
		Users: []authz.User{{ID: "up_alice", Username: "alice", Email: "alice@example.com", Name: "Alice",
			PasswordHash: aliceHash(), EmailVerified: true}},
	})
}

// personBrowser is alice's browser: one cookie jar for the whole test,
// so a second login finds the session of the first. It types her
// password into whichever server's login page it is shown and follows
// the redirects back to the CLI.
type personBrowser struct {
	c      *http.Client
	mu     sync.Mutex
	logins []string // the login pages filled in, by URL
}

func newPersonBrowser() *personBrowser {
	jar, _ := cookiejar.New(nil)
	return &personBrowser{c: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

func (b *personBrowser) browse(ctx context.Context, authURL string) error {
	resp, page, err := readPage(b.c.Get(authURL))
	for range 3 {
		if err != nil {
			return err
		}
		u := resp.Request.URL
		switch u.Path {
		case "/callback":
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("the CLI's callback answered %d: %s", resp.StatusCode, page)
			}
			return nil
		case "/login":
			login := u.Scheme + "://" + u.Host + "/login"
			b.mu.Lock()
			b.logins = append(b.logins, login)
			b.mu.Unlock()
			form := formOf(page)
			form.Set("username", "alice")
			form.Set("password", alicePassword)
			resp, page, err = readPage(b.c.PostForm(login, form))
		default:
			return fmt.Errorf("the browser stopped at %s (%d): %s", u, resp.StatusCode, page)
		}
	}
	return fmt.Errorf("the browser went round in circles: %v", b.loginPages())
}

// loginPages returns the login pages filled in since the last call.
func (b *personBrowser) loginPages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.logins
	b.logins = nil
	return l
}

func (e *cliEnv) amr() []string {
	e.t.Helper()
	tok := e.tokens()
	c, err := tok.claims()
	if err != nil {
		e.t.Fatal(err)
	}
	return c.AMR
}

// TestAPIStepUpToSSO: alice logged in with her password; her organization
// requires SSO through acme. Without a terminal the CLI prints the login
// to run; with one it sends her through the provider alone and retries.
func TestAPIStepUpToSSO(t *testing.T) {
	f := newFederation(t)
	b := newPersonBrowser()
	e := &cliEnv{t: t, issuer: f.local, dir: t.TempDir(), open: b.browse}
	e.mustRun("login")
	if got := e.amr(); !slices.Equal(got, []string{"pwd"}) {
		t.Fatalf("amr after a password login = %v", got)
	}
	b.loginPages()

	r := e.run("api", "GET", "/api/orgs/acme", "--no-interaction")
	if r.code != ExitStepUp || !strings.Contains(r.stderr, "Additional authentication is required. Run:\n  stepup login --method sso:acme\n") {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, ExitStepUp, r.stdout, r.stderr)
	}
	if r.stdout != "" || len(b.loginPages()) != 0 {
		t.Errorf("a non-interactive step-up printed %q or opened the browser", r.stdout)
	}

	e.interactive = true
	r = e.mustRun("api", "GET", "/api/orgs/acme")
	// stdout is the answer alone, for a script to read.
	var org orgView
	if err := json.Unmarshal([]byte(r.stdout), &org); err != nil || org.SSOProvider != "acme" {
		t.Errorf("stdout is not the organization (%v): %s", err, r.stdout)
	}
	if !strings.Contains(r.stderr, "The server requires more authentication (sso:acme)") || !strings.Contains(r.stderr, "Logged in as alice (pwd sso:acme)") {
		t.Errorf("stderr: %s", r.stderr)
	}
	// Only what was missing: the provider's login, not the password again.
	if got := b.loginPages(); !slices.Equal(got, []string{f.upstream + "/login"}) {
		t.Errorf("login pages filled in during the step-up: %v", got)
	}
	if got := e.amr(); !slices.Contains(got, "sso:acme") || !slices.Contains(got, "pwd") {
		t.Errorf("amr after the step-up = %v", got)
	}
	r = e.mustRun("org:users", "acme")
	if !strings.Contains(r.stdout, "alice") || len(b.loginPages()) != 0 {
		t.Errorf("org:users after the step-up:\n%s", r.stdout)
	}
}

// TestSSHStepUpToSSO: the gateway refuses a password certificate with the
// DESIGN's text; the CLI steps up through the provider and gets in.
func TestSSHStepUpToSSO(t *testing.T) {
	personSSH(t, testenv.Require(t, "ssh", "openssh-client"), "")
	f := newFederation(t)
	b := newPersonBrowser()
	e := &cliEnv{t: t, issuer: f.local, dir: t.TempDir(), open: b.browse}
	e.writeConfig(fileConfig{SSHHost: "127.0.0.1", SSHPort: startGatewayBinary(t, f.local)})
	e.mustRun("login")

	r := e.run("ssh", e2eService, "whoami", "--no-interaction")
	denied := "Error: Access denied\n" +
		"Service: " + e2eService + "\n" +
		"User: alice (u_alice)\n" +
		`Parameters: {"amr":["sso:acme"]}` + "\n" +
		"Detail: Additional authentication is required:\n" +
		"\t - Single sign-on (SSO), provider: \"acme\"\n"
	if r.code != ExitStepUp || !strings.Contains(r.stderr, denied) || !strings.HasSuffix(r.stderr, "  stepup login --method sso:acme\n") {
		t.Fatalf("exit %d, want %d\nstderr:\n%s\nwant it to hold:\n%s", r.code, ExitStepUp, r.stderr, denied)
	}

	e.interactive = true
	if r := e.mustRun("ssh", e2eService, "whoami"); r.stdout != "alice "+e2eService+"\n" {
		t.Errorf("after the step-up: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	if r := e.mustRun("ssh-cert:info"); !strings.Contains(r.stdout, "SSO providers: acme") {
		t.Errorf("ssh-cert:info:\n%s", r.stdout)
	}
}

// TestSSOSessionExpiredLogsOut: once the provider's session is older than
// its max_session_age, the server refuses the refresh and the CLI says so
// and forgets the tokens.
func TestSSOSessionExpiredLogsOut(t *testing.T) {
	f := newFederation(t)
	e := &cliEnv{t: t, issuer: f.local, dir: t.TempDir(), open: newPersonBrowser().browse}
	e.mustRun("login", "--method", "sso:acme")
	e.expireSoon()
	e.mustRun("auth:token") // young: the refresh works

	f.skew.Store(int64(2 * time.Hour)) // max_session_age is an hour
	e.expireSoon()
	r := e.run("auth:token")
	if r.code != ExitError || r.stderr != "Error: Your SSO session has expired. You have been logged out. Run: stepup login\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r := e.run("auth:info"); r.code != ExitError || !strings.Contains(r.stderr, "you are not logged in") {
		t.Errorf("after the SSO session expired, auth:info: exit %d, %s", r.code, r.stderr)
	}
}

// TestLoginRefused: what the server refuses comes back to the terminal
// with the server's reason.
func TestLoginRefused(t *testing.T) {
	f := newFederation(t)
	e := &cliEnv{t: t, issuer: f.local, dir: t.TempDir(), open: newPersonBrowser().browse}
	r := e.run("login", "--method", "sso:nope")
	if r.code != ExitError || !strings.Contains(r.stderr, "Error: the login was refused: unmet_authentication_requirements: ") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

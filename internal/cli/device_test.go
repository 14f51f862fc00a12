package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
	"github.com/stepup-dev/stepup/internal/testserver"
)

// deviceClock runs at real speed from a settable offset: the server's
// clock, so that a test can let a device code expire.
type deviceClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *deviceClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}
func (c *deviceClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// newDeviceServer is newServer whose CLI client may use the device grant,
// polled every second rather than five, on a clock the test can move.
func newDeviceServer(t *testing.T) (string, *deviceClock) {
	t.Helper()
	clk := &deviceClock{}
	return testserver.Start(t, authz.Config{
		Store: memory.New(memory.Config{Now: clk.Now}),
		Clients: []authz.Client{{
			ID: DefaultClientID, Name: "Stepup CLI", Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes:    []string{"authorization_code", "refresh_token", deviceGrantType},
			ResponseTypes: []string{"code"}, Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none",
		}},
		Users: []authz.User{{ID: "u_alice", Username: "alice", Email: "alice@example.com", Name: "Alice",
			PasswordHash: aliceHash(), EmailVerified: true}},
		Orgs: []authz.Org{{ID: "acme", Name: "ACME", MFARequired: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}},
		DevicePollInterval: time.Second,
		Now:                clk.Now,
	}), clk
}

// devicePerson is the person at another device. It reads the CLI's stderr
// and, for each URL that carries a code, opens it in a browser of its own,
// signs in as alice (with her code, once she has MFA), sets up MFA where
// the page sends it, and presses decision.
type devicePerson struct {
	t        *testing.T
	issuer   string
	decision string // "allow", "deny", or "" to do nothing

	mu     sync.Mutex
	buf    bytes.Buffer
	seen   map[string]bool
	secret string // alice's TOTP secret once she set it up
	done   chan error
}

func newDevicePerson(t *testing.T, issuer, decision string) *devicePerson {
	return &devicePerson{t: t, issuer: issuer, decision: decision, seen: map[string]bool{}, done: make(chan error, 4)}
}

func (p *devicePerson) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, p.issuer+"/device?user_code=") && !p.seen[line] {
			p.seen[line] = true
			if p.decision != "" {
				go func() { p.done <- p.approve(line) }()
			}
		}
	}
	return len(b), nil
}

func (p *devicePerson) stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.buf.String() }

func (p *devicePerson) wait() {
	p.t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		p.t.Fatalf("the person never finished; stderr:\n%s", p.stderr())
	}
}

var continueLink = regexp.MustCompile(`<a class="button" href="(/device\?[^"]+)">`)

func (p *devicePerson) approve(u string) error {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, page, err := readPage(c.Get(u))
	for step := 0; err == nil && step < 6; step++ {
		switch path := resp.Request.URL.Path; {
		case path == "/login":
			form := formOf(page)
			form.Set("username", "alice")
			form.Set("password", alicePassword)
			resp, page, err = readPage(c.PostForm(p.issuer+"/login", form))
		case path == "/login/otp":
			p.mu.Lock()
			secret := p.secret
			p.mu.Unlock()
			code, cerr := totp.GenerateCode(secret, time.Now())
			if cerr != nil {
				return cerr
			}
			form := formOf(page)
			form.Set("code", code)
			resp, page, err = readPage(c.PostForm(p.issuer+"/login/otp", form))
		case path == "/account/security":
			// The organization requires MFA: set up an authenticator,
			// then go back to the device page.
			_, page, err = readPage(c.PostForm(p.issuer+"/account/security/setup", formOf(page)))
			if err != nil {
				return err
			}
			m := totpSecretOnPage.FindStringSubmatch(page)
			if m == nil {
				return fmt.Errorf("no TOTP secret on the setup page: %s", page)
			}
			p.mu.Lock()
			p.secret = m[1]
			p.mu.Unlock()
			code, cerr := totp.GenerateCode(m[1], time.Now())
			if cerr != nil {
				return cerr
			}
			form := formOf(page)
			form.Set("code", code)
			if _, page, err = readPage(c.PostForm(p.issuer+"/account/security/verify", form)); err != nil {
				return err
			}
			back := continueLink.FindStringSubmatch(page)
			if back == nil {
				return fmt.Errorf("no way back to the device page after setting up MFA: %s", page)
			}
			resp, page, err = readPage(c.Get(p.issuer + strings.ReplaceAll(back[1], "&amp;", "&")))
		case path == "/device" && strings.Contains(page, `value="allow"`):
			form := formOf(page)
			form.Set("decision", p.decision)
			if resp, page, err = readPage(c.PostForm(p.issuer+"/device", form)); err != nil {
				return err
			}
			want := "You can return to your terminal."
			if p.decision == "deny" {
				want = "You denied the sign-in of Stepup CLI"
			}
			if resp.StatusCode != http.StatusOK || !strings.Contains(page, want) {
				return fmt.Errorf("after %s: %d %s", p.decision, resp.StatusCode, page)
			}
			return nil
		default:
			return fmt.Errorf("the person is stuck at %s (%d): %s", resp.Request.URL, resp.StatusCode, page)
		}
	}
	if err != nil {
		return err
	}
	return errors.New("the person went round in circles")
}

// runDevice runs the CLI with the person reading its stderr; a browser
// opening on this machine fails the test.
func runDevice(t *testing.T, issuer, dir string, person *devicePerson, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	app := &App{
		Stdout: &out, Stderr: person,
		Getenv: func(k string) string {
			return map[string]string{"XDG_CONFIG_HOME": dir, "STEPUP_URL": issuer}[k]
		},
		OpenURL:     func(context.Context, string) error { t.Error("opened a browser"); return nil },
		Interactive: func() bool { return true },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	return app.Run(ctx, args), out.String()
}

func storedIn(t *testing.T, dir string) storedTokens {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "stepup", "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tok storedTokens
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

var printedUserCode = regexp.MustCompile(`(?m)^and enter the code ([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})$`)

// TestDeviceLogin: stepup login --device prints the URL and the code (and
// the URL that carries it), the person allows it elsewhere, and the tokens
// and certificate are stored as a browser login stores them.
func TestDeviceLogin(t *testing.T) {
	issuer, _ := newDeviceServer(t)
	dir := t.TempDir()
	person := newDevicePerson(t, issuer, "allow")
	code, stdout := runDevice(t, issuer, dir, person, "login", "--device")
	stderr := person.stderr()
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	person.wait()
	m := printedUserCode.FindStringSubmatch(stderr)
	if m == nil || !strings.Contains(stderr, "\n"+issuer+"/device\n") || !strings.Contains(stderr, "\n"+issuer+"/device?user_code="+m[1]+"\n") ||
		!strings.Contains(stderr, "the code expires in 10 minutes") {
		t.Fatalf("stderr does not show the URL, the code and the URL with the code on lines of their own:\n%s", stderr)
	}
	if strings.Contains(stderr, "\x1b[") {
		t.Errorf("a QR code went to a stderr that is not a terminal:\n%q", stderr)
	}
	if !strings.Contains(stdout, "Logged in as alice (pwd)") {
		t.Errorf("login said %q", stdout)
	}
	tok := storedIn(t, dir)
	c, err := tok.claims()
	if err != nil || tok.RefreshToken == "" || tok.IDToken == "" || tok.Issuer != issuer || tok.Username != "alice" || c.Grant != deviceGrantType {
		t.Fatalf("stored tokens %+v, claims %+v (%v)", tok, c, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stepup", "id_ed25519-cert.pub")); err != nil {
		t.Errorf("no certificate: %v", err)
	}
}

// TestDeviceLoginDenied: Deny in the browser ends the login with a clear
// message and exit 1, and stores nothing.
func TestDeviceLoginDenied(t *testing.T) {
	issuer, _ := newDeviceServer(t)
	dir := t.TempDir()
	person := newDevicePerson(t, issuer, "deny")
	code, _ := runDevice(t, issuer, dir, person, "login", "--device")
	person.wait()
	if stderr := person.stderr(); code != ExitError || !strings.Contains(stderr, "Error: the device login was denied in the browser") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "stepup", "tokens.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tokens stored after a denial: %v", err)
	}
}

// TestDeviceLoginExpired: nobody allows it; once the code has expired
// (on the server's clock) the CLI says so and exits 1.
func TestDeviceLoginExpired(t *testing.T) {
	issuer, clk := newDeviceServer(t)
	dir := t.TempDir()
	person := newDevicePerson(t, issuer, "")
	go func() {
		for !strings.Contains(person.stderr(), "Waiting for the login") {
			time.Sleep(20 * time.Millisecond)
		}
		clk.Advance(11 * time.Minute)
	}()
	code, _ := runDevice(t, issuer, dir, person, "login", "--device")
	if stderr := person.stderr(); code != ExitError || !printedUserCode.MatchString(stderr) ||
		!strings.Contains(stderr, "expired before the login was allowed; run stepup login --device again") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}

// TestDeviceStepUpFromAPI: after a device login, the step-up an API call
// meets is a device login too (no browser on this machine): the person
// sets up MFA on the page the code leads to, allows it, and the call is
// retried with a token that has mfa.
func TestDeviceStepUpFromAPI(t *testing.T) {
	issuer, _ := newDeviceServer(t)
	dir := t.TempDir()
	person := newDevicePerson(t, issuer, "allow")
	if code, stdout := runDevice(t, issuer, dir, person, "login", "--device"); code != 0 {
		t.Fatalf("login: exit %d %s\n%s", code, stdout, person.stderr())
	}
	person.wait()
	code, stdout := runDevice(t, issuer, dir, person, "api", "GET", "/api/orgs/acme")
	if code != 0 || !strings.Contains(stdout, `"id":"acme"`) {
		t.Fatalf("api: exit %d, stdout %s\nstderr:\n%s", code, stdout, person.stderr())
	}
	person.wait()
	if n := len(printedUserCode.FindAllString(person.stderr(), -1)); n != 2 {
		t.Errorf("%d device codes printed, want 2 (the login and the step-up):\n%s", n, person.stderr())
	}
	tok := storedIn(t, dir)
	c, err := tok.claims()
	if err != nil || !strings.Contains(strings.Join(c.AMR, " "), "mfa") || c.Grant != deviceGrantType {
		t.Fatalf("after the step-up: %+v (%v)", c, err)
	}
}

// TestDeviceFirstLoginForCertificate: with no session at all, a command
// that needs a certificate logs in with a code when given --device (as
// stepup ssh --device does, through the same path), and never opens a
// browser on this machine.
func TestDeviceFirstLoginForCertificate(t *testing.T) {
	issuer, _ := newDeviceServer(t)
	dir := t.TempDir()
	person := newDevicePerson(t, issuer, "allow")
	code, stdout := runDevice(t, issuer, dir, person, "ssh-cert:load", "--device")
	person.wait()
	if code != 0 || !strings.Contains(stdout, "The SSH certificate is valid until") || !printedUserCode.MatchString(person.stderr()) {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, person.stderr())
	}
	tok := storedIn(t, dir)
	if c, err := tok.claims(); err != nil || c.Grant != deviceGrantType {
		t.Fatalf("stored tokens: %+v (%v)", c, err)
	}
}

// TestDeviceFlagOnCommandsThatLogIn: the commands that may log in take
// --device.
func TestDeviceFlagOnCommandsThatLogIn(t *testing.T) {
	for _, cmd := range []string{"login", "api", "ssh", "ssh-cert:load"} {
		var out bytes.Buffer
		app := &App{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
		if code := app.Run(context.Background(), []string{cmd, "--help"}); code != 0 || !strings.Contains(out.String(), "--device") {
			t.Errorf("stepup %s --help (exit %d) does not offer --device:\n%s", cmd, code, out.String())
		}
	}
}

// TestQRLines: the drawing is square in modules (two rows a line), with a
// light margin, and shows the finder pattern in its top-left corner; a
// buffer is no terminal, so it gets none.
func TestQRLines(t *testing.T) {
	drawing, err := qrLines("http://127.0.0.1:8080/device?user_code=BCDF-GHJK")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(drawing, "\n"), "\n")
	w := qrWidth(drawing)
	if w < 21+2*qrQuiet || len(lines) != (w+1)/2 {
		t.Fatalf("a drawing %d wide and %d lines high", w, len(lines))
	}
	var rows [][]rune
	for _, l := range lines {
		if !strings.HasPrefix(l, "\x1b[30;107m") || !strings.HasSuffix(l, "\x1b[0m") {
			t.Fatalf("line %q is not black on white", l)
		}
		r := []rune(strings.TrimSuffix(strings.TrimPrefix(l, "\x1b[30;107m"), "\x1b[0m"))
		if len(r) != w {
			t.Fatalf("line %q is %d wide, want %d", l, len(r), w)
		}
		rows = append(rows, r)
	}
	if strings.TrimSpace(string(rows[0])) != "" {
		t.Errorf("no light margin on top: %q", string(rows[0]))
	}
	// Modules rows 0 and 1 of the finder: seven dark, then dark, five
	// light, dark.
	if got := string(rows[1][qrQuiet : qrQuiet+7]); got != "█▀▀▀▀▀█" {
		t.Errorf("the finder pattern's top is %q", got)
	}
	if _, ok := terminalWidth(&bytes.Buffer{}); ok {
		t.Error("a buffer counts as a terminal")
	}
}

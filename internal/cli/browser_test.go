package cli

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// person reads stderr as the CLI writes it and, once it sees the line
// that sends them to the browser, opens the URL above it themselves, as
// someone copying it from the terminal would.
type person struct {
	issuer string
	// goWhen is the start of the line after which the person opens the
	// URL; "" means as soon as it is printed.
	goWhen string
	browse func(ctx context.Context, url string) error

	mu      sync.Mutex
	buf     bytes.Buffer
	url     string
	started bool
	done    chan error
}

func (p *person) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, p.issuer+"/oauth2/authorize?") && p.url == "" {
			p.url = line
		}
		if p.url != "" && !p.started && (p.goWhen == "" || strings.HasPrefix(line, p.goWhen)) {
			p.started = true
			go func(u string) { p.done <- p.browse(context.Background(), u) }(p.url)
		}
	}
	return len(b), nil
}

func (p *person) stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.buf.String() }

// printedURL is the authorize URL the CLI printed; it fails the test
// unless the URL stands on a line of its own.
func (p *person) printedURL(t *testing.T) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.url == "" || !strings.Contains("\n"+p.buf.String(), "\n"+p.url+"\n") {
		t.Fatalf("no authorize URL on a line of its own in stderr:\n%s", p.buf.String())
	}
	return p.url
}

// TestBrowserThatCannotStartStillShowsURL uses the real opener: one that
// starts and then fails, as xdg-open does without a display, and one that
// is not installed. Either way the URL is on stderr, the failure is said,
// and the person can log in by opening the URL themselves.
func TestBrowserThatCannotStartStillShowsURL(t *testing.T) {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	for _, c := range []struct {
		name, script, want string
	}{
		{"fails", "#!/bin/sh\necho \"" + name + ": no method available for opening '$1'\" >&2\nexit 3\n",
			"Could not open a browser: " + name + ": exit status 3 (" + name + ": no method available for opening 'the URL'). Open the URL above"},
		{"missing", "", "Could not open a browser: " + name + " is not installed."},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			bin := t.TempDir()
			if c.script != "" {
				if err := os.WriteFile(filepath.Join(bin, name), []byte(c.script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("PATH", bin)
			p := &person{issuer: e.issuer, goWhen: "Could not open a browser:", browse: e.browse, done: make(chan error, 1)}
			app := &App{Stdout: &bytes.Buffer{}, Stderr: p, Getenv: func(k string) string {
				return map[string]string{"XDG_CONFIG_HOME": e.dir, "STEPUP_URL": e.issuer}[k]
			}}
			// Safety nets for a URL that never shows, not measures of speed.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if code := app.Run(ctx, []string{"login", "--timeout", "25s"}); code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, p.stderr())
			}
			if err := <-p.done; err != nil {
				t.Fatal(err)
			}
			p.printedURL(t)
			if !strings.Contains(p.stderr(), c.want) {
				t.Errorf("stderr lacks %q:\n%s", c.want, p.stderr())
			}
		})
	}
}

// TestNoBrowserOnCommandsThatLogIn: every command that may log in takes
// --no-browser, and its login (a step-up, or the first one) prints the
// URL on a line of its own instead of opening a browser.
func TestNoBrowserOnCommandsThatLogIn(t *testing.T) {
	for _, c := range []struct {
		args []string
		// stepUp: alice is logged in with a password and the command
		// meets acme's MFA requirement; otherwise nobody is logged in.
		stepUp bool
		want   string
	}{
		{[]string{"api", "GET", "/api/orgs/acme"}, true, `"id":"acme"`},
		{[]string{"org:security", "acme"}, true, "MFA required: yes"},
		{[]string{"org:users", "acme"}, true, "alice"},
		{[]string{"org:remind", "acme", "--all-without-mfa"}, true, "Sent: nobody"},
		{[]string{"ssh", "svc", "--host", "gw.example.com"}, true, "connected"},
		{[]string{"ssh", "svc", "--host", "gw.example.com"}, false, "connected"},
		{[]string{"ssh-cert:load"}, false, "The SSH certificate is valid until"},
	} {
		name := c.args[0] + map[bool]string{true: "/step-up", false: "/first-login"}[c.stepUp]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			b := &mfaBrowser{issuer: e.issuer}
			e.open = b.browse
			if c.stepUp {
				e.mustRun("login")
				b.setSecret(enrollAliceMFA(t, e.issuer))
				fakeSSH(t, `["mfa"]`, 1)
			} else {
				fakeSSH(t, `["mfa"]`, 0)
			}
			p := &person{issuer: e.issuer, browse: b.browse, done: make(chan error, 1)}
			var out bytes.Buffer
			app := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: p,
				Getenv: func(k string) string {
					return map[string]string{"XDG_CONFIG_HOME": e.dir, "STEPUP_URL": e.issuer}[k]
				},
				OpenURL: func(context.Context, string) error {
					t.Error("opened a browser despite --no-browser")
					return nil
				},
				Interactive: func() bool { return true },
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if code := app.Run(ctx, append(c.args, "--no-browser")); code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), p.stderr())
			}
			if err := <-p.done; err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(p.printedURL(t))
			if got, want := u.Query().Get("amr"), map[bool]string{true: "mfa", false: ""}[c.stepUp]; got != want {
				t.Errorf("the URL asks for amr %q, want %q: %s", got, want, u)
			}
			// A step-up for an organization's API names it, so that the
			// login pages can say whose requirement it is.
			wantACR := ""
			if c.stepUp && strings.HasPrefix(c.args[0], "org:") || c.args[0] == "api" {
				wantACR = "urn:stepup:org:acme"
			}
			if got := u.Query().Get("acr_values"); got != wantACR {
				t.Errorf("the URL has acr_values %q, want %q: %s", got, wantACR, u)
			}
			if !strings.Contains(p.stderr(), "Open this URL in a browser to log in:\n") {
				t.Errorf("stderr:\n%s", p.stderr())
			}
			if !strings.Contains(out.String(), c.want) {
				t.Errorf("stdout lacks %q:\n%s", c.want, out.String())
			}
		})
	}
}

package authz_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestLoginPageInChromium logs in through the real login page in a headless
// Chromium, the way a person running `stepup login` does: the CLI listens on
// a loopback port, the browser shows the login form, and the server's
// redirect chain ends at the CLI's callback. A real browser enforces what
// the cookie-jar client of the other tests cannot: the page's Content
// Security Policy (our own stylesheet must load; form-action must allow the
// redirects that follow the form to the loopback callback), cookies with
// SameSite, and the label/field associations that assistive technology
// relies on.
func TestLoginPageInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	ts := newTestServer(t, nil)

	// The CLI's loopback callback: records the first query it receives.
	received := make(chan url.Values, 1)
	var once sync.Once
	cb := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		once.Do(func() { received <- r.URL.Query() })
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "You can close this window.")
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cb.Listener = l
	cb.Start()
	t.Cleanup(cb.Close)
	_, port, _ := net.SplitHostPort(l.Addr().String())

	cfg := cliConfig(ts.Issuer, port)
	verifier := oauth2.GenerateVerifier()
	state := rand.Text()
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))

	// A minimal flag list: the machine has no network beyond loopback, and
	// tests run as root.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1024, 768),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	// Everything the browser reports about the page: console calls,
	// uncaught exceptions, and the browser's own log, where Chromium writes
	// "Refused to … because it violates the following Content Security
	// Policy directive". Listen sees them in order, as they arrive.
	var (
		mu       sync.Mutex
		messages []string
	)
	cspViolation := make(chan string, 1)
	record := func(msg string) {
		mu.Lock()
		messages = append(messages, msg)
		mu.Unlock()
		if mentionsCSP(msg) {
			select {
			case cspViolation <- msg:
			default:
			}
		}
	}
	if err := chromedp.Listen(bctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range ev.Args {
				if a.Description != "" {
					args = append(args, a.Description)
				} else {
					args = append(args, string(a.Value))
				}
			}
			record(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			record(fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, desc))
		case *log.EventEntryAdded:
			e := ev.Entry
			record(fmt.Sprintf("log %s/%s (%s): %s", e.Source, e.Level, e.URL, e.Text))
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	// The page itself reports CSP violations too (securitypolicyviolation);
	// a script that DevTools installs is not subject to the page's CSP.
	if _, err := chromedp.Call(bctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e =>
	window.__cspViolations.push(e.violatedDirective + ' blocked ' + e.blockedURI));`,
	}); err != nil {
		t.Fatal(err)
	}

	// newBadMessages returns what the browser reported since the last call
	// that points at a broken page: anything about the CSP, exceptions,
	// console errors, and errors of the browser log. Two errors are
	// expected: the 401 that answers a wrong password, and the 404 of
	// /favicon.ico, which the browser asks for by itself and the server
	// does not serve.
	seen := 0
	newBadMessages := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var bad []string
		for _, m := range messages[seen:] {
			switch {
			case mentionsCSP(m):
				bad = append(bad, m)
			case strings.HasPrefix(m, "exception"), strings.HasPrefix(m, "console.error"), strings.HasPrefix(m, "console.assert"):
				bad = append(bad, m)
			case strings.HasPrefix(m, "log ") && strings.Contains(m, "/error "):
				if strings.Contains(m, "status of 401") && strings.Contains(m, "("+ts.Issuer+"/login)") ||
					strings.Contains(m, "status of 404") && strings.Contains(m, "/favicon.ico)") {
					continue
				}
				bad = append(bad, m)
			}
		}
		seen = len(messages)
		return bad
	}
	checkReports := func(when string) {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`window.__cspViolations || []`))
		if err != nil {
			t.Fatalf("%s: reading CSP violations: %v", when, err)
		}
		if len(v) > 0 {
			t.Errorf("%s: the page reported CSP violations: %q", when, v)
		}
		if bad := newBadMessages(); len(bad) > 0 {
			t.Errorf("%s: the browser reported:\n  %s", when, strings.Join(bad, "\n  "))
		}
	}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		t.Logf("everything the browser reported:\n  %s", strings.Join(messages, "\n  "))
	}()

	// 1. The authorization request lands on the login page.
	resp, err := chromedp.Run(bctx, chromedp.NavigateResponse(authURL))
	if err != nil {
		t.Fatalf("navigating to the authorization URL: %v", err)
	}
	loc, err := chromedp.Run(bctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusOK || !strings.HasPrefix(loc, ts.Issuer+"/login?") {
		t.Fatalf("authorization URL led to %s (%d), want the login page", loc, resp.Status)
	}
	csp, _ := resp.Headers["Content-Security-Policy"].(string)
	if csp == "" {
		csp, _ = resp.Headers["content-security-policy"].(string)
	}
	t.Logf("login page CSP: %s", csp)
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(`form input[name="password"]`))); err != nil {
		t.Fatal(err)
	}

	// 2. What a person (and a screen reader) relies on.
	type field struct {
		Name, ID, Type, Label string
		Labels                int
	}
	type formReport struct {
		Fields      []field
		CSRF        string
		Button      string
		Lang        string
		StyleSheets []int // rules per stylesheet; -1 where it could not be read
	}
	checkForm := func(when string) {
		t.Helper()
		r, err := chromedp.Run(bctx, chromedp.Evaluate[formReport](`(() => {
	const form = document.querySelector('form');
	const fields = [...form.querySelectorAll('input:not([type=hidden]), select, textarea')].map(el => {
		const byFor = el.id ? [...document.querySelectorAll('label[for]')].filter(l => l.htmlFor === el.id) : [];
		return {Name: el.name, ID: el.id, Type: el.type,
			Label: byFor.map(l => l.textContent.trim()).join(' | '),
			Labels: el.labels ? el.labels.length : 0};
	});
	const csrf = form.querySelector('input[type=hidden][name=csrf_token]');
	const button = form.querySelector('button[type=submit], input[type=submit]');
	const sheets = [...document.styleSheets].map(s => { try { return s.cssRules.length } catch (e) { return -1 } });
	return {Fields: fields, CSRF: csrf ? csrf.value : '', Button: button ? (button.textContent || button.value).trim() : '',
		Lang: document.documentElement.lang, StyleSheets: sheets};
})()`))
		if err != nil {
			t.Fatalf("%s: inspecting the form: %v", when, err)
		}
		byName := map[string]field{}
		for _, f := range r.Fields {
			byName[f.Name] = f
			if f.ID == "" || f.Label == "" || f.Labels == 0 {
				t.Errorf("%s: input %q (id %q) has no <label for> naming it (label %q, %d labels)", when, f.Name, f.ID, f.Label, f.Labels)
			}
		}
		if _, ok := byName["username"]; !ok {
			t.Errorf("%s: no username field in %+v", when, r.Fields)
		}
		if f, ok := byName["password"]; !ok || f.Type != "password" {
			t.Errorf("%s: password field = %+v, want type=password", when, f)
		}
		if r.CSRF == "" {
			t.Errorf("%s: the hidden csrf_token is empty", when)
		}
		if r.Button == "" {
			t.Errorf("%s: the submit button has no text", when)
		}
		if r.Lang == "" {
			t.Errorf("%s: <html> has no lang", when)
		}
		// style-src 'self' must let our own stylesheet in.
		if len(r.StyleSheets) == 0 || r.StyleSheets[0] <= 0 {
			t.Errorf("%s: the stylesheet did not load or has no rules: %v", when, r.StyleSheets)
		}
	}
	checkForm("login page")
	checkReports("login page")

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("STEPUP_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	shotPath := filepath.Join(dir, "stepup-login.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the login page: %s", shotPath)

	// 3. A wrong password: the login page again, with the error announced.
	submit := chromedp.Click(chromedp.CSS(`form button[type="submit"]`))
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), "not "+alicePassword),
	); err != nil {
		t.Fatal(err)
	}
	resp, err = chromedp.RunResponse(bctx, submit)
	if err != nil {
		t.Fatalf("submitting a wrong password: %v", err)
	}
	if loc, _ = chromedp.Run(bctx, chromedp.Location()); !strings.HasPrefix(loc, ts.Issuer+"/login") {
		t.Fatalf("after a wrong password the browser is at %s (%d), want the login page", loc, resp.Status)
	}
	alert, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`[role="alert"]`)))
	if err != nil {
		t.Fatalf("no role=alert after a wrong password: %v", err)
	}
	if strings.TrimSpace(alert) != "Incorrect username or password." {
		t.Errorf("alert = %q, want %q", alert, "Incorrect username or password.")
	}
	checkForm("login page after a wrong password")
	checkReports("login page after a wrong password")

	// 4. The right password: the redirect chain ends at the CLI's callback.
	user, err := chromedp.Run(bctx, chromedp.Value(chromedp.ID("username")))
	if err != nil {
		t.Fatal(err)
	}
	steps := []chromedp.Action[chromedp.Void]{}
	if user != "alice" {
		steps = append(steps, chromedp.Clear(chromedp.ID("username")), chromedp.SendKeys(chromedp.ID("username"), "alice"))
	}
	steps = append(steps, chromedp.Clear(chromedp.ID("password")), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	if err := chromedp.Do(bctx, steps...); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, submit); err != nil {
		t.Fatalf("clicking Sign in: %v", err)
	}
	var q url.Values
	select {
	case q = <-received:
	case msg := <-cspViolation:
		t.Fatalf("the browser refused the redirect to the callback: %s", msg)
	case <-ctx.Done():
		t.Fatalf("the callback on port %s got no request: %v; the browser reported:\n  %s",
			port, ctx.Err(), strings.Join(newBadMessages(), "\n  "))
	}
	if e := q.Get("error"); e != "" {
		t.Fatalf("authorization failed: %s: %s", e, q.Get("error_description"))
	}
	if q.Get("code") == "" {
		t.Errorf("callback got no code: %v", q)
	}
	if q.Get("state") != state {
		t.Errorf("callback state = %q, want %q", q.Get("state"), state)
	}
	if q.Get("iss") != ts.Issuer {
		t.Errorf("callback iss = %q, want %q", q.Get("iss"), ts.Issuer)
	}
	if bad := newBadMessages(); len(bad) > 0 {
		t.Errorf("during the login the browser reported:\n  %s", strings.Join(bad, "\n  "))
	}

	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the code: %v", err)
	}
	if tok.AccessToken == "" {
		t.Fatal("no access token")
	}
}

func mentionsCSP(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "content security policy") || strings.Contains(m, "content-security-policy")
}

package authz_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

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
	received, port := callbackServer(t)
	cfg := cliConfig(ts.Issuer, port)
	verifier, state := oauth2.GenerateVerifier(), rand.Text()

	b := newChrome(t, ctx, chromium, ts.Issuer)
	// The 401 that answers a wrong password is expected; this test never
	// reaches /login/otp.
	b.unauthorized = []string{"/login"}

	// 1. The authorization request lands on the login page.
	resp := b.open(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "/login", "the authorization URL")
	if loc := chromeRun(b, "reading the location", chromedp.Location()); !strings.HasPrefix(loc, ts.Issuer+"/login?") {
		t.Fatalf("authorization URL led to %s, want the login page with the request's query", loc)
	}
	csp, _ := resp.Headers["Content-Security-Policy"].(string)
	if csp == "" {
		csp, _ = resp.Headers["content-security-policy"].(string)
	}
	t.Logf("login page CSP: %s", csp)
	b.do("waiting for the password field", chromedp.WaitVisible(chromedp.CSS(`form input[name="password"]`)))

	// 2. What a person (and a screen reader) relies on.
	checkLoginForm(b, "login page")
	b.checkReports("login page")
	b.screenshot("stepup-login.png")

	// 3. A wrong password: the login page again, with the error announced.
	b.do("typing a wrong password",
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), "not "+alicePassword),
	)
	b.click("Sign in", "/login", http.StatusUnauthorized)
	if alert := b.text("the alert after a wrong password", chromedp.CSS(`[role="alert"]`)); alert != "Incorrect username or password." {
		t.Errorf("alert = %q, want %q", alert, "Incorrect username or password.")
	}
	checkLoginForm(b, "login page after a wrong password")
	b.checkReports("login page after a wrong password")

	// 4. The right password: the redirect chain ends at the CLI's callback.
	var steps []chromedp.Action[chromedp.Void]
	if user := chromeRun(b, "reading the username", chromedp.Value(chromedp.ID("username"))); user != "alice" {
		steps = append(steps, chromedp.Clear(chromedp.ID("username")), chromedp.SendKeys(chromedp.ID("username"), "alice"))
	}
	steps = append(steps, chromedp.Clear(chromedp.ID("password")), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	b.do("typing the right password", steps...)
	q := b.submitToCallback("the right password", cfg.RedirectURL, received,
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)))
	checkCallback(t, q, state, ts.Issuer)

	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the code: %v", err)
	}
	if tok.AccessToken == "" {
		t.Fatal("no access token")
	}
}

// checkLoginForm checks the login form beyond what checkAccessible does:
// every field of the form has a <label for>, there are a username and a
// password field, the hidden csrf_token has a value, and the submit button
// has text.
func checkLoginForm(b *chrome, when string) {
	b.t.Helper()
	b.checkAccessible(when, []string{"username", "password"})
	type field struct {
		Name, ID, Type, Label string
		Labels                int
	}
	type formReport struct {
		Fields []field
		CSRF   string
		Button string
	}
	r := chromeRun(b, when+": inspecting the form", chromedp.Evaluate[formReport](`(() => {
	const form = document.querySelector('form');
	const fields = [...form.querySelectorAll('input:not([type=hidden]), select, textarea')].map(el => {
		const byFor = el.id ? [...document.querySelectorAll('label[for]')].filter(l => l.htmlFor === el.id) : [];
		return {Name: el.name, ID: el.id, Type: el.type,
			Label: byFor.map(l => l.textContent.trim()).join(' | '),
			Labels: el.labels ? el.labels.length : 0};
	});
	const csrf = form.querySelector('input[type=hidden][name=csrf_token]');
	const button = form.querySelector('button[type=submit], input[type=submit]');
	return {Fields: fields, CSRF: csrf ? csrf.value : '', Button: button ? (button.textContent || button.value).trim() : ''};
})()`))
	byName := map[string]field{}
	for _, f := range r.Fields {
		byName[f.Name] = f
		if f.ID == "" || f.Label == "" || f.Labels == 0 {
			b.t.Errorf("%s: input %q (id %q) has no <label for> naming it (label %q, %d labels)", when, f.Name, f.ID, f.Label, f.Labels)
		}
	}
	if _, ok := byName["username"]; !ok {
		b.t.Errorf("%s: no username field in %+v", when, r.Fields)
	}
	if f, ok := byName["password"]; !ok || f.Type != "password" {
		b.t.Errorf("%s: password field = %+v, want type=password", when, f)
	}
	if r.CSRF == "" {
		b.t.Errorf("%s: the hidden csrf_token is empty", when)
	}
	if r.Button == "" {
		b.t.Errorf("%s: the submit button has no text", when)
	}
}

package authz_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestMFAEnrollmentInChromium turns on MFA through the account pages in a
// headless Chromium and then signs in with both factors in a second browser
// with its own profile, the way a person does with their phone's
// authenticator app: the CLI listens on a loopback port; the first login
// needs only the password; /account/security offers the setup, shows a QR
// code and the secret, and takes a code; a later login asks for the
// password and then the code, says so when the code is wrong, and ends at
// the CLI's callback with amr otp+pwd+mfa. A real browser checks what the
// plain-HTTP MFA tests cannot: that the QR code's data: URL passes the
// Content Security Policy and decodes into an image, that the secret can be
// selected, that form-action lets the code form's redirects reach the
// loopback callback, and that every field has a label.
func TestMFAEnrollmentInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	ts := newTestServer(t, nil)
	received, port := mfaCallbackServer(t)
	cfg := cliConfig(ts.Issuer, port)

	// 1, 2. The first login, with the password only.
	b1 := newMFABrowser(t, ctx, chromium, ts.Issuer)
	verifier, state := oauth2.GenerateVerifier(), rand.Text()
	b1.open(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "/login", "the first authorization")
	b1.checkAccessible("login page", nil)
	b1.checkReports("login page")
	b1.do("signing in", chromedp.SendKeys(chromedp.ID("username"), "alice"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	q := b1.submitToCallback("the password (no MFA yet)", cfg.RedirectURL, received,
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)))
	checkMFACallback(t, q, state, ts.Issuer)
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the first code: %v", err)
	}
	if got := mfaAMR(t, tok); !slices.Equal(got, []string{"pwd"}) {
		t.Fatalf("before MFA, amr = %q, want [pwd]", got)
	}

	// 3. The account page, with MFA off.
	b1.open(ts.Issuer+"/account/security", "/account/security", "the account page")
	if h := b1.text("the account page", chromedp.CSS(`main h2`)); h != "Multi-factor authentication is off" {
		t.Fatalf("account page heading = %q, want %q", h, "Multi-factor authentication is off")
	}
	b1.checkAccessible("account page (MFA off)", nil)
	b1.checkReports("account page (MFA off)")
	b1.click("Set up application", "/account/security", http.StatusOK)

	// 4. The setup page: QR code, secret, code field.
	type qrReport struct {
		Count    int
		Alt, Src string
		Width    int
	}
	qr := mfaRun(b1, "inspecting the QR code", chromedp.Evaluate[qrReport](`(() => {
	const imgs = document.querySelectorAll('main img');
	const img = imgs[0];
	return img ? {Count: imgs.length, Alt: img.getAttribute('alt') || '', Src: img.getAttribute('src').slice(0, 40), Width: img.width}
		: {Count: 0, Alt: '', Src: '', Width: 0};
})()`))
	if qr.Count != 1 {
		t.Fatalf("setup page has %d images, want the one QR code", qr.Count)
	}
	if strings.TrimSpace(qr.Alt) == "" {
		t.Errorf("the QR code has no alt text")
	}
	if !strings.HasPrefix(qr.Src, "data:image/png;base64,") {
		t.Errorf("QR code src starts %q, want a data:image/png URL", qr.Src)
	}
	// The image decoded: img-src allows data:, and the PNG is valid.
	if _, err := chromedp.Run(b1.ctx, chromedp.Poll[bool](
		`(() => { const img = document.querySelector('main img'); return img.complete && img.naturalWidth === 200; })()`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		imgState := mfaRun(b1, "reading the QR image's state", chromedp.Evaluate[string](
			`(() => { const img = document.querySelector('main img'); return 'complete=' + img.complete + ' naturalWidth=' + img.naturalWidth + ' naturalHeight=' + img.naturalHeight; })()`))
		t.Errorf("the QR code did not decode into a 200-pixel image (%s): %v", imgState, err)
	}

	secret := strings.TrimSpace(b1.text("reading the secret", chromedp.CSS("#totp-secret")))
	if !regexp.MustCompile(`^[A-Z2-7]{16,}$`).MatchString(secret) {
		t.Fatalf("the secret on the page is %q, want base32", secret)
	}
	if userSelect := mfaRun(b1, "reading the secret's user-select", chromedp.Evaluate[string](
		`getComputedStyle(document.getElementById('totp-secret')).userSelect`)); userSelect == "none" {
		t.Errorf("the secret has user-select: none; a person cannot copy it")
	} else {
		t.Logf("the secret's user-select is %q", userSelect)
	}
	b1.screenshot("stepup-mfa-setup.png")

	// A person copying the secret clicks it: with user-select: all, one
	// click selects all of it.
	b1.do("clicking the secret", chromedp.Click(chromedp.ID("totp-secret")))
	if sel := mfaRun(b1, "reading the selection", chromedp.Evaluate[string](`window.getSelection().toString()`)); strings.TrimSpace(sel) != secret {
		t.Errorf("after a click on the secret the selection is %q, want the whole secret %q", sel, secret)
	}
	if link := mfaRun(b1, "reading the setup link", chromedp.TextContent(chromedp.ID("otpauth-url"))); !strings.HasPrefix(link, "otpauth://totp/") || !strings.Contains(link, "secret="+secret) {
		t.Errorf("setup link %q does not carry the secret %q", link, secret)
	}
	if l := b1.text("the code field's label", chromedp.CSS(`label[for="code"]`)); l != "Code from the app" {
		t.Errorf("the code field's label is %q, want %q", l, "Code from the app")
	}
	b1.checkAccessible("setup page", []string{"code"})
	b1.checkReports("setup page")

	enrollCode, err := totp.GenerateCode(secret, ts.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	b1.do("typing the code", chromedp.SendKeys(chromedp.ID("code"), enrollCode))
	b1.click("Verify & save", "/account/security/verify", http.StatusOK)

	// 5. MFA is on; the recovery codes are shown once.
	if h := b1.text("the account page after setup", chromedp.CSS(`#on-h`)); h != "Multi-factor authentication is on" {
		t.Errorf("after Verify & save the heading is %q", h)
	}
	codes := mfaRun(b1, "reading the recovery codes", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('ul.codes li')].map(li => li.textContent.trim())`))
	recoveryCode := regexp.MustCompile(`^[a-z0-9]{5}-[a-z0-9]{5}$`)
	distinct := map[string]bool{}
	for _, c := range codes {
		distinct[c] = true
		if !recoveryCode.MatchString(c) {
			t.Errorf("recovery code %q has the wrong form", c)
		}
	}
	if len(codes) != 10 || len(distinct) != 10 {
		t.Errorf("the page shows %d recovery codes (%d distinct), want 10: %q", len(codes), len(distinct), codes)
	}
	if n := b1.text("the notice", chromedp.CSS(`[role="status"]`)); n != "Multi-factor authentication is on." {
		t.Errorf("role=status notice = %q, want %q", n, "Multi-factor authentication is on.")
	}
	if n := mfaRun(b1, "counting alerts", chromedp.Evaluate[int](`document.querySelectorAll('[role="alert"]').length`)); n != 0 {
		t.Errorf("the page after Verify & save has %d role=alert elements", n)
	}
	b1.checkAccessible("account page (MFA on)", []string{"regen-code", "disable-code"})
	b1.checkReports("account page (MFA on)")

	// 6. A new login, in a browser with no session: password, then code.
	b2 := newMFABrowser(t, ctx, chromium, ts.Issuer)
	verifier, state = oauth2.GenerateVerifier(), rand.Text()
	b2.open(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "/login", "the second authorization (a new profile, no session)")
	b2.checkReports("login page (second browser)")
	b2.do("signing in", chromedp.SendKeys(chromedp.ID("username"), "alice"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	b2.click("Sign in", "/login/otp", http.StatusOK)
	select {
	case q := <-received:
		t.Fatalf("with MFA on, the password alone reached the callback: %v", q)
	default:
	}
	if l := b2.text("the code field's label", chromedp.CSS(`label[for="code"]`)); l == "" {
		t.Errorf("the code field on the otp page has no label")
	}
	b2.checkAccessible("otp page", []string{"code"})
	b2.checkReports("otp page")
	b2.screenshot("stepup-mfa-otp.png")

	// A wrong code: the same page, with the error announced.
	b2.do("typing a wrong code", chromedp.SendKeys(chromedp.ID("code"), wrongTOTP(t, secret, ts.Clock.Now())))
	b2.click("Verify", "/login/otp", http.StatusUnauthorized)
	if alert := b2.text("the alert after a wrong code", chromedp.CSS(`[role="alert"]`)); !strings.Contains(alert, "That code is not right") {
		t.Errorf("after a wrong code, role=alert says %q, want %q", alert, "That code is not right")
	}
	b2.checkAccessible("otp page after a wrong code", []string{"code"})
	b2.checkReports("otp page after a wrong code")

	// The enrollment used the current step; the next one is within the
	// accepted skew. The server clock must stay: fosite compares auth_time
	// with the wall clock.
	next, err := totp.GenerateCode(secret, ts.Clock.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b2.do("typing the right code", chromedp.Clear(chromedp.ID("code")), chromedp.SendKeys(chromedp.ID("code"), next))
	q = b2.submitToCallback("the right code", cfg.RedirectURL, received,
		chromedp.Click(chromedp.Search(`//button[normalize-space()='Verify']`)))
	checkMFACallback(t, q, state, ts.Issuer)
	tok, err = cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the code after MFA: %v", err)
	}
	if got := mfaAMR(t, tok); !slices.Equal(got, []string{"otp", "pwd", "mfa"}) {
		t.Errorf("after password and code, amr = %q, want [otp pwd mfa]", got)
	}
}

// mfaAMR is the amr claim of an access token.
func mfaAMR(t *testing.T, tok *oauth2.Token) []string {
	t.Helper()
	_, c := jwtParts(t, tok.AccessToken)
	if c["amr"] == nil {
		return nil
	}
	return strs(c["amr"])
}

// wrongTOTP returns a 6-digit code that no step near now accepts.
func wrongTOTP(t *testing.T, secret string, now time.Time) string {
	t.Helper()
	var near []string
	for d := -2; d <= 3; d++ {
		c, err := totp.GenerateCode(secret, now.Add(time.Duration(d)*30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		near = append(near, c)
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", i*111111%1000000)
		if !slices.Contains(near, c) {
			return c
		}
	}
}

func checkMFACallback(t *testing.T, q url.Values, state, issuer string) {
	t.Helper()
	if e := q.Get("error"); e != "" {
		t.Fatalf("authorization failed: %s: %s", e, q.Get("error_description"))
	}
	if q.Get("code") == "" {
		t.Fatalf("callback got no code: %v", q)
	}
	if q.Get("state") != state {
		t.Errorf("callback state = %q, want %q", q.Get("state"), state)
	}
	if q.Get("iss") != issuer {
		t.Errorf("callback iss = %q, want %q", q.Get("iss"), issuer)
	}
}

// mfaCallbackServer is the CLI's loopback callback: it passes on the query
// of every request to /callback.
func mfaCallbackServer(t *testing.T) (<-chan url.Values, string) {
	t.Helper()
	received := make(chan url.Values, 4)
	cb := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case received <- r.URL.Query():
		default:
		}
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
	return received, port
}

// mfaBrowser is a headless Chromium with a profile of its own, and what it
// reported about the pages it showed.
type mfaBrowser struct {
	t      *testing.T
	ctx    context.Context
	issuer string

	mu       sync.Mutex
	messages []string
	seen     int
	csp      chan string
}

func newMFABrowser(t *testing.T, ctx context.Context, chromium, issuer string) *mfaBrowser {
	t.Helper()
	// The flags of TestLoginPageInChromium: the machine has no network
	// beyond loopback, and tests run as root.
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
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	b := &mfaBrowser{t: t, ctx: bctx, issuer: issuer, csp: make(chan string, 1)}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		t.Logf("everything the browser reported:\n  %s", strings.Join(b.messages, "\n  "))
	})

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
			b.record(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			b.record(fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, desc))
		case *log.EventEntryAdded:
			e := ev.Entry
			b.record(fmt.Sprintf("log %s/%s (%s): %s", e.Source, e.Level, e.URL, e.Text))
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	// The page's own report of CSP violations, from a script that DevTools
	// installs and the page's CSP does not apply to.
	if _, err := chromedp.Call(bctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e =>
	window.__cspViolations.push(e.violatedDirective + ' blocked ' + e.blockedURI));`,
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *mfaBrowser) record(msg string) {
	b.mu.Lock()
	b.messages = append(b.messages, msg)
	b.mu.Unlock()
	if mentionsCSP(msg) {
		select {
		case b.csp <- msg:
		default:
		}
	}
}

// newBadMessages returns what the browser reported since the last call that
// points at a broken page. Two errors are expected: the 401 that answers a
// wrong code, and a 404 for /favicon.ico where a page does not name its icon
// (the CLI's callback).
func (b *mfaBrowser) newBadMessages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bad []string
	for _, m := range b.messages[b.seen:] {
		switch {
		case mentionsCSP(m):
			bad = append(bad, m)
		case strings.HasPrefix(m, "exception"), strings.HasPrefix(m, "console.error"), strings.HasPrefix(m, "console.assert"):
			bad = append(bad, m)
		case strings.HasPrefix(m, "log ") && strings.Contains(m, "/error "):
			if strings.Contains(m, "status of 401") && strings.Contains(m, "("+b.issuer+"/login/otp)") ||
				strings.Contains(m, "status of 404") && strings.Contains(m, "/favicon.ico)") {
				continue
			}
			bad = append(bad, m)
		}
	}
	b.seen = len(b.messages)
	return bad
}

// checkReports fails the test on CSP violations the page saw and on errors
// the browser reported since the last check.
func (b *mfaBrowser) checkReports(when string) {
	b.t.Helper()
	v := mfaRun(b, when+": reading CSP violations", chromedp.Evaluate[[]string](`window.__cspViolations || []`))
	if len(v) > 0 {
		b.t.Errorf("%s: the page reported CSP violations: %q", when, v)
	}
	if bad := b.newBadMessages(); len(bad) > 0 {
		b.t.Errorf("%s: the browser reported:\n  %s", when, strings.Join(bad, "\n  "))
	}
}

// checkAccessible checks what assistive technology relies on: every visible
// field has a <label for> with text, every image has alt text, every button
// has text, the document has a language and our stylesheet loaded. wantIDs
// are the ids of the visible fields the page must have.
func (b *mfaBrowser) checkAccessible(when string, wantIDs []string) {
	b.t.Helper()
	type field struct {
		Name, ID, Type, Label string
		Labels                int
	}
	type image struct{ Src, Alt string }
	type report struct {
		Fields      []field
		Images      []image
		Buttons     []string
		Lang, Title string
		StyleSheets []int
	}
	r := mfaRun(b, when+": inspecting the page", chromedp.Evaluate[report](`(() => {
	const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
	const fields = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].filter(visible).map(el => {
		const byFor = el.id ? [...document.querySelectorAll('label[for]')].filter(l => l.htmlFor === el.id) : [];
		return {Name: el.name, ID: el.id, Type: el.type,
			Label: byFor.map(l => l.textContent.trim()).join(' | '),
			Labels: el.labels ? el.labels.length : 0};
	});
	const images = [...document.images].map(img => ({Src: (img.getAttribute('src') || '').slice(0, 30), Alt: (img.getAttribute('alt') || '').trim()}));
	const buttons = [...document.querySelectorAll('button, input[type=submit]')].filter(visible).map(el => (el.textContent || el.value).trim());
	const sheets = [...document.styleSheets].map(s => { try { return s.cssRules.length } catch (e) { return -1 } });
	return {Fields: fields, Images: images, Buttons: buttons, Lang: document.documentElement.lang, Title: document.title, StyleSheets: sheets};
})()`))
	ids := map[string]bool{}
	for _, f := range r.Fields {
		ids[f.ID] = true
		if f.ID == "" || f.Label == "" || f.Labels == 0 {
			b.t.Errorf("%s: input %q (id %q) has no <label for> naming it (label %q, %d labels)", when, f.Name, f.ID, f.Label, f.Labels)
		}
	}
	for _, id := range wantIDs {
		if !ids[id] {
			b.t.Errorf("%s: no visible field with id %q in %+v", when, id, r.Fields)
		}
	}
	for _, img := range r.Images {
		if img.Alt == "" {
			b.t.Errorf("%s: image %q… has no alt text", when, img.Src)
		}
	}
	for i, s := range r.Buttons {
		if s == "" {
			b.t.Errorf("%s: button %d has no text", when, i)
		}
	}
	if len(r.Buttons) == 0 {
		b.t.Errorf("%s: the page has no button", when)
	}
	if r.Lang == "" {
		b.t.Errorf("%s: <html> has no lang", when)
	}
	if r.Title == "" {
		b.t.Errorf("%s: the page has no title", when)
	}
	if len(r.StyleSheets) == 0 || r.StyleSheets[0] <= 0 {
		b.t.Errorf("%s: the stylesheet did not load or has no rules: %v", when, r.StyleSheets)
	}
}

// run runs one action that returns a value, and fails the test on an error.
func mfaRun[T any](b *mfaBrowser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (b *mfaBrowser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text is the visible text of the first element that matches the CSS
// selector on the page the browser shows now. It fails at once when there is
// none: the page has loaded, so there is nothing to wait for.
func (b *mfaBrowser) text(what string, sel chromedp.CSS) string {
	b.t.Helper()
	type found struct {
		Found bool
		Text  string
	}
	js, err := json.Marshal(string(sel))
	if err != nil {
		b.t.Fatal(err)
	}
	r := mfaRun(b, what, chromedp.Evaluate[found](`(() => {
	const el = document.querySelector(`+string(js)+`);
	return el ? {Found: true, Text: el.innerText} : {Found: false, Text: ''};
})()`))
	if !r.Found {
		b.t.Fatalf("%s: no element matches %s on %s", what, sel, mfaRun(b, what, chromedp.Location()))
	}
	return strings.TrimSpace(r.Text)
}

// open navigates to u and checks that the browser ends on the server's page
// at path, with 200.
func (b *mfaBrowser) open(u, path, what string) {
	b.t.Helper()
	resp := mfaRun(b, "opening "+what, chromedp.NavigateResponse(u))
	b.checkLanded(what, resp, path, http.StatusOK)
}

// click clicks the button with this text, waits for the page it leads to,
// and checks that it is the server's page at path with the status.
func (b *mfaBrowser) click(button, path string, status int) {
	b.t.Helper()
	what := fmt.Sprintf("clicking %q", button)
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.Search(`//button[normalize-space()='`+button+`']`)))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	b.checkLanded(what, resp, path, status)
}

func (b *mfaBrowser) checkLanded(what string, resp *network.Response, path string, status int) {
	b.t.Helper()
	loc := mfaRun(b, what+": reading the location", chromedp.Location())
	u, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(loc, b.issuer+"/") || u.Path != path || resp.Status != int64(status) {
		b.t.Fatalf("%s led to %s (%d), want %s%s (%d)", what, loc, resp.Status, b.issuer, path, status)
	}
}

// submitToCallback runs steps that end the login and waits until the
// browser reaches the CLI's callback; it returns the callback's query.
func (b *mfaBrowser) submitToCallback(what, callback string, received <-chan url.Values, steps ...chromedp.Action[chromedp.Void]) url.Values {
	b.t.Helper()
	type result struct {
		resp *network.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := chromedp.RunResponse(b.ctx, steps...)
		done <- result{resp, err}
	}()
	var (
		q    url.Values
		page *result
	)
	for q == nil || page == nil {
		select {
		case q = <-received:
		case r := <-done:
			if r.err != nil {
				// The page that stayed may have seen why (a form-action
				// violation aborts the navigation).
				v, _ := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`window.__cspViolations || []`))
				b.t.Fatalf("%s: the browser did not reach the callback: %v; CSP violations %q; it reported:\n  %s",
					what, r.err, v, strings.Join(b.newBadMessages(), "\n  "))
			}
			page = &r
		case msg := <-b.csp:
			b.t.Fatalf("%s: the browser refused the redirect to the callback: %s", what, msg)
		case <-b.ctx.Done():
			b.t.Fatalf("%s: the callback got no request: %v; the browser reported:\n  %s", what, b.ctx.Err(), strings.Join(b.newBadMessages(), "\n  "))
		}
	}
	if page.resp.Status != http.StatusOK || !strings.HasPrefix(page.resp.URL, callback+"?") {
		b.t.Errorf("%s: the browser ended at %s (%d), want the callback %s", what, page.resp.URL, page.resp.Status, callback)
	}
	if bad := b.newBadMessages(); len(bad) > 0 {
		b.t.Errorf("%s: on the way to the callback the browser reported:\n  %s", what, strings.Join(bad, "\n  "))
	}
	return q
}

// screenshot saves the page to $STEPUP_SCREENSHOT_DIR, or a temporary
// directory.
func (b *mfaBrowser) screenshot(name string) {
	b.t.Helper()
	shot := mfaRun(b, "taking a screenshot", chromedp.FullScreenshot(100))
	dir := os.Getenv("STEPUP_SCREENSHOT_DIR")
	if dir == "" {
		dir = b.t.TempDir()
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, shot, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
}

package authz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The Chromium harness of the *InChromium tests: a headless browser with a
// profile of its own that records what it reports about the pages it shows,
// and the CLI's loopback callback.

func checkCallback(t *testing.T, q url.Values, state, issuer string) {
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

// callbackServer is the CLI's loopback callback: it passes on the query
// of every request to /callback.
func callbackServer(t *testing.T) (<-chan url.Values, string) {
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

// chrome is a headless Chromium with a profile of its own, and what it
// reported about the pages it showed.
type chrome struct {
	t      *testing.T
	ctx    context.Context
	issuer string
	// unauthorized are the paths on the issuer whose 401 answers are
	// expected (a wrong password or code) rather than a sign of a broken
	// page; newChrome sets /login/otp.
	unauthorized []string

	mu       sync.Mutex
	messages []string
	seen     int
	csp      chan string
}

func newChrome(t *testing.T, ctx context.Context, chromium, issuer string) *chrome {
	t.Helper()
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
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	b := &chrome{t: t, ctx: bctx, issuer: issuer, unauthorized: []string{"/login/otp"}, csp: make(chan string, 1)}
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

func (b *chrome) record(msg string) {
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
// wrong password or code (at the paths in b.unauthorized), and a 404 for
// /favicon.ico where a page does not name its icon (the CLI's callback).
func (b *chrome) newBadMessages() []string {
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
			if strings.Contains(m, "status of 401") && slices.ContainsFunc(b.unauthorized, func(p string) bool { return strings.Contains(m, "("+b.issuer+p+")") }) ||
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
func (b *chrome) checkReports(when string) {
	b.t.Helper()
	v := chromeRun(b, when+": reading CSP violations", chromedp.Evaluate[[]string](`window.__cspViolations || []`))
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
func (b *chrome) checkAccessible(when string, wantIDs []string) {
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
	r := chromeRun(b, when+": inspecting the page", chromedp.Evaluate[report](`(() => {
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

// chromeRun runs one action that returns a value, and fails the test on an error.
func chromeRun[T any](b *chrome, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (b *chrome) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text is the visible text of the first element that matches the CSS
// selector on the page the browser shows now. It fails at once when there is
// none: the page has loaded, so there is nothing to wait for.
func (b *chrome) text(what string, sel chromedp.CSS) string {
	b.t.Helper()
	type found struct {
		Found bool
		Text  string
	}
	js, err := json.Marshal(string(sel))
	if err != nil {
		b.t.Fatal(err)
	}
	r := chromeRun(b, what, chromedp.Evaluate[found](`(() => {
	const el = document.querySelector(`+string(js)+`);
	return el ? {Found: true, Text: el.innerText} : {Found: false, Text: ''};
})()`))
	if !r.Found {
		b.t.Fatalf("%s: no element matches %s on %s", what, sel, chromeRun(b, what, chromedp.Location()))
	}
	return strings.TrimSpace(r.Text)
}

// open navigates to u and checks that the browser ends on the server's page
// at path, with 200; it returns the response of that page.
func (b *chrome) open(u, path, what string) *network.Response {
	b.t.Helper()
	resp := chromeRun(b, "opening "+what, chromedp.NavigateResponse(u))
	b.checkLanded(what, resp, path, http.StatusOK)
	return resp
}

// click clicks the button with this text, waits for the page it leads to,
// and checks that it is the server's page at path with the status.
func (b *chrome) click(button, path string, status int) {
	b.t.Helper()
	what := fmt.Sprintf("clicking %q", button)
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.Search(`//button[normalize-space()='`+button+`']`)))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	b.checkLanded(what, resp, path, status)
}

func (b *chrome) checkLanded(what string, resp *network.Response, path string, status int) {
	b.t.Helper()
	loc := chromeRun(b, what+": reading the location", chromedp.Location())
	u, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(loc, b.issuer+"/") || u.Path != path || resp.Status != int64(status) {
		b.t.Fatalf("%s led to %s (%d), want %s%s (%d)", what, loc, resp.Status, b.issuer, path, status)
	}
}

// submitToCallback runs steps that end the login and waits until the
// browser reaches the CLI's callback; it returns the callback's query.
func (b *chrome) submitToCallback(what, callback string, received <-chan url.Values, steps ...chromedp.Action[chromedp.Void]) url.Values {
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
func (b *chrome) screenshot(name string) {
	b.t.Helper()
	shot := chromeRun(b, "taking a screenshot", chromedp.FullScreenshot(100))
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

func mentionsCSP(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "content security policy") || strings.Contains(m, "content-security-policy")
}

package authz_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/mfa"
)

// TestOrgSettingsPageInChromium drives /orgs/{org}/settings/security in a
// headless Chromium as the organization's owner: she signs in with both
// factors, requires MFA for the organization through the checkbox's label,
// reminds the members without MFA (selected with the row checkboxes, and one
// with its own Remind button) through a real SMTP server, and a form whose
// CSRF token was changed in the page is refused. Throughout, the page must
// pass its Content Security Policy, report no errors, name every control
// and give its table headers.
func TestOrgSettingsPageInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, func(c *authz.Config) {
		withTeam(c)
		c.Mailer = mfa.SMTP{Addr: sink.Addr, RootCAs: sink.RootCAs()}
		c.MailFrom = "Stepup <no-reply@example.com>"
	})
	settings := ts.Issuer + "/orgs/team/settings/security"
	const (
		settingsPath = "/orgs/team/settings/security"
		remindPath   = "/orgs/team/settings/remind"
	)

	// alice needs MFA herself before she may require it: she enrolls over
	// plain HTTP, so the browser's login asks for the password and the code.
	hb, _ := loginAs(t, ts, "alice")
	secret, _ := enroll(t, ts, hb)

	b := newChrome(t, ctx, chromium, ts.Issuer)
	// The one error this test causes on purpose: the 403 of the form with a
	// changed CSRF token.
	checkReports := func(when string) {
		t.Helper()
		v := chromeRun(b, when+": reading CSP violations", chromedp.Evaluate[[]string](`window.__cspViolations || []`))
		if len(v) > 0 {
			t.Errorf("%s: the page reported CSP violations: %q", when, v)
		}
		var bad []string
		for _, m := range b.newBadMessages() {
			if strings.Contains(m, "status of 403") && strings.Contains(m, "("+ts.Issuer+remindPath+")") {
				continue
			}
			bad = append(bad, m)
		}
		if len(bad) > 0 {
			t.Errorf("%s: the browser reported:\n  %s", when, strings.Join(bad, "\n  "))
		}
	}

	// 1. Signing in: the settings page sends the browser to the login page
	// and, after the password and the code, back to itself.
	b.open(settings, "/login", "the settings page without a session")
	b.checkAccessible("login page", []string{"username", "password"})
	b.do("typing the password", chromedp.SendKeys(chromedp.ID("username"), "alice"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	b.click("Sign in", "/login/otp", http.StatusOK)
	b.checkAccessible("otp page", []string{"code"})
	// enroll used the current step; the next one is within the skew.
	b.do("typing the code", chromedp.SendKeys(chromedp.ID("code"), code(t, secret, ts.Clock.Now().Add(30*time.Second))))
	b.click("Verify", settingsPath, http.StatusOK)
	checkReports("signing in")

	// 2. The members table: carol and dave without MFA, alice with it.
	rows := orgMemberRows(b, "the settings page")
	want := map[string]string{"alice": "Enabled", "carol": "Not enabled", "dave": "Not enabled"}
	if len(rows) != len(want) {
		t.Errorf("the table has %d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		if w, ok := want[r.Username]; !ok || r.MFA != w {
			t.Errorf("row %+v: want MFA %q", r, w)
		}
		if r.MFA == "Not enabled" && (r.Select != "Select "+r.Username || r.Remind != "Remind "+r.Username) {
			t.Errorf("row of %s without MFA: checkbox %q, button %q; want %q, %q", r.Username, r.Select, r.Remind, "Select "+r.Username, "Remind "+r.Username)
		}
		if r.MFA == "Enabled" && (r.Select != "" || r.Remind != "") {
			t.Errorf("row of %s with MFA offers a reminder: %+v", r.Username, r)
		}
	}
	checkOrgPageAccessible(b, "the settings page")
	checkReports("the settings page")
	b.screenshot("stepup-org-security.png")

	// 3. Requiring MFA: the checkbox is ticked by a click on its label.
	if checked := chromeRun(b, "reading the checkbox", chromedp.Evaluate[bool](`document.getElementById('mfa_required').checked`)); checked {
		t.Fatal("MFA is required before anyone asked for it")
	}
	b.do("clicking the label", chromedp.Click(chromedp.Search(`//label[starts-with(normalize-space(), 'Require multi-factor authentication')]`)))
	if checked := chromeRun(b, "reading the checkbox", chromedp.Evaluate[bool](`document.getElementById('mfa_required').checked`)); !checked {
		t.Fatal("a click on the label did not tick the checkbox: the label is not tied to it")
	}
	b.click("Save", settingsPath, http.StatusOK)
	if n := b.text("the notice after Save", chromedp.CSS(`[role="status"]`)); n != "Saved." {
		t.Errorf("after Save, role=status says %q, want %q", n, "Saved.")
	}
	if n := chromeRun(b, "counting alerts", chromedp.Evaluate[int](`document.querySelectorAll('[role="alert"]').length`)); n != 0 {
		t.Errorf("after Save the page has %d role=alert elements", n)
	}
	b.open(settings, settingsPath, "the settings page again")
	if checked := chromeRun(b, "reading the checkbox after a reload", chromedp.Evaluate[bool](`document.getElementById('mfa_required').checked`)); !checked {
		t.Error("after a reload, MFA is not required")
	}
	checkOrgPageAccessible(b, "the settings page after Save")
	checkReports("saving the settings")

	// 4. Reminding the selected members: two emails.
	b.do("selecting carol and dave",
		chromedp.Click(chromedp.CSS(`input[type="checkbox"][aria-label="Select carol"]`)),
		chromedp.Click(chromedp.CSS(`input[type="checkbox"][aria-label="Select dave"]`)))
	b.click("Remind selected", remindPath, http.StatusOK)
	notice := b.text("the notice after Remind selected", chromedp.CSS(`[role="status"]`))
	if !strings.HasPrefix(notice, "Reminder sent to ") || !strings.Contains(notice, "carol") || !strings.Contains(notice, "dave") || strings.Contains(notice, "Not sent") {
		t.Errorf("after Remind selected, role=status says %q, want both carol and dave reminded", notice)
	}
	mails := sink.Wait(2, 10*time.Second)
	var to []string
	for _, m := range mails {
		to = append(to, m.To...)
		if !strings.Contains(m.Header("Subject"), "Team") {
			t.Errorf("reminder subject %q does not name the organization", m.Header("Subject"))
		}
		if !strings.Contains(m.Body(), ts.Issuer+"/account/security") {
			t.Errorf("no setup link in the reminder %q", m.Body())
		}
	}
	slices.Sort(to)
	if !slices.Equal(to, []string{"carol@example.com", "dave@example.com"}) {
		t.Fatalf("%d emails arrived for %q, want one each to carol@example.com and dave@example.com", len(mails), to)
	}
	for _, r := range orgMemberRows(b, "the page after the reminders") {
		if r.Username != "alice" && (r.LastReminded == "" || r.LastReminded == "—") {
			t.Errorf("after the reminders, %s's row shows no reminder: %+v", r.Username, r)
		}
	}
	checkOrgPageAccessible(b, "the page after the reminders")
	checkReports("reminding the selection")

	// 5. dave's own Remind button: he was reminded a moment ago.
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(`button[aria-label="Remind dave"]`)))
	if err != nil {
		t.Fatalf("clicking Remind for dave: %v", err)
	}
	b.checkLanded("clicking Remind for dave", resp, remindPath, http.StatusOK)
	if n := b.text("the notice after Remind dave", chromedp.CSS(`[role="status"]`)); n != "Not sent to dave: was reminded recently." {
		t.Errorf("after Remind for dave, role=status says %q, want %q", n, "Not sent to dave: was reminded recently.")
	}
	checkReports("reminding dave again")

	// 6. A form whose CSRF token was changed in the page is refused.
	changed := chromeRun(b, "changing the CSRF token", chromedp.Evaluate[int](`(() => {
	const inputs = document.querySelectorAll('form[action$="/settings/remind"] input[type=hidden][name=csrf_token]');
	inputs.forEach(i => { i.value = 'forged' + i.value.slice(6); });
	return inputs.length;
})()`))
	if changed != 1 {
		t.Fatalf("the remind form has %d csrf_token inputs, want 1", changed)
	}
	resp, err = chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(`button[aria-label="Remind carol"]`)))
	if err != nil {
		t.Fatalf("submitting the forged form: %v", err)
	}
	b.checkLanded("submitting the remind form with a changed CSRF token", resp, remindPath, http.StatusForbidden)
	body := chromeRun(b, "reading the error page", chromedp.Evaluate[string](`document.body.innerText`))
	if !strings.Contains(body, "This form has expired or did not come from this site.") {
		t.Errorf("the 403 page says %q, want the expired-form error", body)
	}
	if n := chromeRun(b, "counting alerts", chromedp.Evaluate[int](`document.querySelectorAll('[role="alert"]').length`)); n != 1 {
		t.Errorf("the 403 page has %d role=alert elements, want 1", n)
	}
	checkReports("the forged form")
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("%d emails in all, want still 2", n)
	}
}

// orgMemberRow is one row of the members table as the browser shows it.
type orgMemberRow struct {
	Username, MFA, LastReminded string
	Select, Remind              string // the aria-labels of the row's checkbox and button
}

func orgMemberRows(b *chrome, when string) []orgMemberRow {
	b.t.Helper()
	return chromeRun(b, when+": reading the members table", chromedp.Evaluate[[]orgMemberRow](`[...document.querySelectorAll('table tbody tr')].map(tr => {
	const cell = i => tr.cells[i] ? tr.cells[i].innerText.trim() : '';
	const box = tr.querySelector('input[type=checkbox]');
	const button = tr.querySelector('button');
	return {Username: cell(1).split('\n')[0].trim(), MFA: cell(3), LastReminded: cell(4),
		Select: box ? box.getAttribute('aria-label') || '' : '',
		Remind: button ? button.getAttribute('aria-label') || '' : ''};
})`))
}

// checkOrgPageAccessible checks the settings page the way assistive
// technology reads it: every visible control has a name (a <label for> or
// aria-label), every button has a name, the table has a header cell with
// text and scope=col for every column, and the document has a language, a
// title and our stylesheet.
func checkOrgPageAccessible(b *chrome, when string) {
	b.t.Helper()
	type control struct{ Tag, Name, ID, AccessibleName string }
	type report struct {
		Controls          []control
		Buttons           []string
		Headers, Scopes   []string
		RowCells          []int
		Tables            int
		Lang, Title       string
		StyleSheets       []int
		SectionsLabelled  bool
		CheckboxLabelText string
	}
	r := chromeRun(b, when+": inspecting the page", chromedp.Evaluate[report](`(() => {
	const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
	const name = el => {
		const byLabel = el.labels ? [...el.labels].map(l => l.textContent.trim()).join(' ') : '';
		const by = el.getAttribute('aria-labelledby');
		const byRef = by ? by.split(' ').map(id => (document.getElementById(id) || {textContent: ''}).textContent.trim()).join(' ') : '';
		return (el.getAttribute('aria-label') || byRef || byLabel || '').trim();
	};
	const controls = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].filter(visible)
		.map(el => ({Tag: el.tagName.toLowerCase(), Name: el.name, ID: el.id, AccessibleName: name(el)}));
	const buttons = [...document.querySelectorAll('button, input[type=submit]')].filter(visible)
		.map(el => el.getAttribute('aria-label') || (el.textContent || el.value).trim());
	const table = document.querySelector('table');
	const ths = table ? [...table.querySelectorAll('thead th')] : [];
	const sheets = [...document.styleSheets].map(s => { try { return s.cssRules.length } catch (e) { return -1 } });
	const mfa = document.getElementById('mfa_required');
	return {Controls: controls, Buttons: buttons,
		Headers: ths.map(th => th.textContent.trim()), Scopes: ths.map(th => th.getAttribute('scope') || ''),
		RowCells: table ? [...table.querySelectorAll('tbody tr')].map(tr => tr.cells.length) : [],
		Tables: document.querySelectorAll('table').length,
		Lang: document.documentElement.lang, Title: document.title, StyleSheets: sheets,
		SectionsLabelled: [...document.querySelectorAll('section')].every(s => {
			const id = s.getAttribute('aria-labelledby'); const h = id && document.getElementById(id);
			return !!h && h.textContent.trim() !== '';
		}),
		CheckboxLabelText: mfa && mfa.labels.length ? mfa.labels[0].textContent.trim() : ''};
})()`))
	for _, c := range r.Controls {
		if c.AccessibleName == "" {
			b.t.Errorf("%s: %s %q (id %q) has no accessible name", when, c.Tag, c.Name, c.ID)
		}
	}
	if len(r.Controls) == 0 {
		b.t.Errorf("%s: the page has no visible controls", when)
	}
	if !strings.HasPrefix(r.CheckboxLabelText, "Require multi-factor authentication") {
		b.t.Errorf("%s: the MFA checkbox's label is %q", when, r.CheckboxLabelText)
	}
	for i, s := range r.Buttons {
		if strings.TrimSpace(s) == "" {
			b.t.Errorf("%s: button %d has no name", when, i)
		}
	}
	if r.Tables != 1 {
		b.t.Errorf("%s: %d tables, want the members table", when, r.Tables)
	}
	if len(r.Headers) == 0 {
		b.t.Errorf("%s: the members table has no header cells", when)
	}
	for i, h := range r.Headers {
		if h == "" || r.Scopes[i] != "col" {
			b.t.Errorf("%s: header cell %d is %q with scope %q, want text and scope=col", when, i, h, r.Scopes[i])
		}
	}
	for i, n := range r.RowCells {
		if n != len(r.Headers) {
			b.t.Errorf("%s: row %d has %d cells for %d headers", when, i, n, len(r.Headers))
		}
	}
	if !r.SectionsLabelled {
		b.t.Errorf("%s: a section is not labelled by a heading", when)
	}
	if r.Lang == "" || r.Title == "" {
		b.t.Errorf("%s: lang %q, title %q; want both", when, r.Lang, r.Title)
	}
	if len(r.StyleSheets) == 0 || r.StyleSheets[0] <= 0 {
		b.t.Errorf("%s: the stylesheet did not load or has no rules: %v", when, r.StyleSheets)
	}
}

// TestConsoleStepUpRedirectInChromium plays the console's step-up redirect
// in a headless Chromium. The console, a confidential client served here,
// signs bob in with his password and calls the API for an organization that
// requires MFA; the API answers 401 with the missing amr; the console sends
// the whole page to the authorization endpoint with amr=mfa. Stepup must ask
// only for what is missing — bob has no authenticator, so the setup page,
// and never the password again — and then return to the console with a
// code whose token the API accepts.
func TestConsoleStepUpRedirectInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	const (
		consoleID     = "console-local"
		consoleSecret = "console-local-secret-0123456789ab"
	)
	ts := newTestServer(t, func(c *authz.Config) {
		c.Clients = append(c.Clients, authz.Client{ID: consoleID, SecretHash: authz.HashClientSecret(consoleSecret),
			RedirectURIs: []string{"http://127.0.0.1/console/callback"},
			GrantTypes:   []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "profile", "email"}, TokenEndpointAuthMethod: "client_secret_basic"})
		c.Orgs = append(c.Orgs, authz.Org{ID: "team", Name: "Team", MFARequired: true,
			Members: []authz.Member{{UserID: "u_bob", Role: "member"}}})
		// This console is first-party under its own id: its people's
		// tokens must work at the API.
		c.APIClients = []string{cliClient, consoleID}
	})

	con := startConsole(t, ts.Issuer, consoleID, consoleSecret)

	b := newChrome(t, ctx, chromium, ts.Issuer)
	// Every document request, redirects included, in order.
	var (
		navMu sync.Mutex
		navs  []string
	)
	if err := chromedp.Listen(b.ctx, func(ev any) {
		if ev, ok := ev.(*network.EventRequestWillBeSent); ok && ev.Type == network.ResourceTypeDocument {
			navMu.Lock()
			navs = append(navs, ev.Request.Method+" "+ev.Request.URL)
			navMu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	navigations := func() []string {
		navMu.Lock()
		defer navMu.Unlock()
		return slices.Clone(navs)
	}
	defer func() { t.Logf("document requests:\n  %s", strings.Join(navigations(), "\n  ")) }()

	// 1. The console's home page; its Projects link needs a sign-in.
	resp := chromeRun(b, "opening the console", chromedp.NavigateResponse(con.URL+"/console/"))
	if resp.Status != http.StatusOK {
		t.Fatalf("the console answered %d", resp.Status)
	}
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.Search(`//a[normalize-space()='Projects']`)))
	if err != nil {
		t.Fatalf("clicking Projects: %v", err)
	}
	b.checkLanded("clicking Projects without a token", resp, "/login", http.StatusOK)
	b.checkReports("the login page")

	// 2. The password: the console gets a token, the API answers 401 with
	// the missing amr, and the console redirects to the authorization
	// endpoint with amr=mfa, which asks bob to set up an authenticator.
	b.do("typing the password", chromedp.SendKeys(chromedp.ID("username"), "bob"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	before := len(navigations())
	b.click("Sign in", "/account/security", http.StatusOK)
	stepUp := navigations()[before:]
	if got := con.apiStatuses(); !slices.Equal(got, []int{http.StatusUnauthorized}) {
		t.Fatalf("after the password the console's API calls answered %v, want [401]", got)
	}
	if got := con.tokenAMRs(); len(got) != 1 || !slices.Equal(got[0], []string{"pwd"}) {
		t.Errorf("the console's first token has amr %q, want [pwd]", got)
	}
	// The chain: the login form, the console's callback and /projects,
	// then the authorization request with amr=mfa, then the setup page.
	i := slices.IndexFunc(stepUp, func(s string) bool {
		u, err := url.Parse(strings.TrimPrefix(s, "GET "))
		return err == nil && strings.HasPrefix(s, "GET "+ts.Issuer+"/oauth2/authorize?") && u.Query().Get("amr") == "mfa"
	})
	if i < 0 {
		t.Fatalf("the console did not redirect to the authorization endpoint with amr=mfa; document requests:\n  %s", strings.Join(stepUp, "\n  "))
	}
	if u, _ := url.Parse(strings.TrimPrefix(stepUp[i], "GET ")); u.Query().Get("client_id") != consoleID || u.Query().Get("redirect_uri") != con.URL+"/console/callback" {
		t.Errorf("the step-up request %s is not the console's", stepUp[i])
	}
	for _, s := range stepUp[i+1:] {
		if u, err := url.Parse(s[strings.Index(s, " ")+1:]); err == nil && strings.HasPrefix(u.Path, "/login") {
			t.Errorf("during the step-up the browser was sent to the login page: %s", s)
		}
	}
	if h := b.text("the account page", chromedp.CSS(`main h2`)); h != "Multi-factor authentication is off" {
		t.Fatalf("the step-up landed on a page headed %q, want the MFA setup offer", h)
	}
	b.checkAccessible("the setup offer", nil)
	b.checkReports("the step-up redirect")

	// 3. Setup in the browser: the secret from the page, a code, Continue.
	b.click("Set up application", "/account/security", http.StatusOK)
	secret := b.text("reading the secret", chromedp.CSS("#totp-secret"))
	b.checkAccessible("the setup page", []string{"code"})
	b.do("typing the code", chromedp.SendKeys(chromedp.ID("code"), code(t, secret, ts.Clock.Now())))
	b.click("Verify & save", "/account/security/verify", http.StatusOK)
	href := chromeRun(b, "reading the Continue link", chromedp.Evaluate[string](
		`(() => { const a = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'Continue'); return a ? a.getAttribute('href') : ''; })()`))
	if !strings.HasPrefix(href, "/oauth2/authorize?resume=") {
		t.Fatalf("after Verify & save the Continue link is %q, want the resumed authorization", href)
	}
	b.checkReports("the setup")

	before = len(navigations())
	resp, err = chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.Search(`//a[normalize-space()='Continue']`)))
	if err != nil {
		t.Fatalf("clicking Continue: %v", err)
	}
	back := navigations()[before:]
	for _, s := range back {
		if u, err := url.Parse(s[strings.Index(s, " ")+1:]); err == nil && strings.HasPrefix(u.Path, "/login") {
			t.Errorf("after Continue the browser was sent to the login page: %s", s)
		}
	}
	if !slices.ContainsFunc(back, func(s string) bool {
		return strings.HasPrefix(s, "GET "+con.URL+"/console/callback?") && strings.Contains(s, "code=")
	}) {
		t.Errorf("after Continue the browser did not reach the console's callback with a code:\n  %s", strings.Join(back, "\n  "))
	}

	// 4. The console exchanged the code and the API answered 200.
	if resp.Status != http.StatusOK || !strings.HasPrefix(resp.URL, con.URL+"/console/projects") {
		t.Fatalf("after Continue the browser is at %s (%d), want the console's projects page", resp.URL, resp.Status)
	}
	if got := con.apiStatuses(); !slices.Equal(got, []int{http.StatusUnauthorized, http.StatusOK}) {
		t.Errorf("the console's API calls answered %v, want [401 200]", got)
	}
	if got := con.tokenAMRs(); len(got) != 2 || !slices.Contains(got[1], "mfa") {
		t.Errorf("the console's tokens have amr %q, want a second one with mfa", got)
	}
	if s := b.text("the API status on the console", chromedp.CSS("#api-status")); s != "200" {
		t.Errorf("the console shows API status %q, want 200", s)
	}
	var org map[string]any
	if err := json.Unmarshal([]byte(b.text("the API answer on the console", chromedp.CSS("#api-body"))), &org); err != nil || org["id"] != "team" {
		t.Errorf("the console shows the API answer %v (%v), want organization team", org, err)
	}
	b.checkReports("back on the console")
}

// console is a small web application with a confidential client: it keeps
// one person's token in memory, calls the organization API with it, and
// answers a step-up challenge by sending the browser to the authorization
// endpoint with the amr the API asked for.
type console struct {
	*httptest.Server
	cfg    *oauth2.Config
	issuer string

	mu       sync.Mutex
	state    string
	verifier string
	token    *oauth2.Token
	statuses []int
	amrs     [][]string
}

func startConsole(t *testing.T, issuer, clientID, secret string) *console {
	t.Helper()
	c := &console{issuer: issuer}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", c.home)
	mux.HandleFunc("GET /console/projects", c.projects)
	mux.HandleFunc("GET /console/callback", c.callback)
	c.Server = httptest.NewUnstartedServer(mux)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Listener = l
	c.Start()
	t.Cleanup(c.Close)
	c.cfg = &oauth2.Config{
		ClientID: clientID, ClientSecret: secret,
		RedirectURL: c.URL + "/console/callback",
		Scopes:      []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{
			AuthURL: issuer + "/oauth2/authorize", TokenURL: issuer + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
	return c
}

func (c *console) apiStatuses() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.statuses)
}

func (c *console) tokenAMRs() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.amrs)
}

func (c *console) page(w http.ResponseWriter, status int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>%s</title><link rel="icon" href="data:,"></head><body><main><h1>%s</h1>%s</main></body></html>`,
		html.EscapeString(title), html.EscapeString(title), body)
}

func (c *console) home(w http.ResponseWriter, r *http.Request) {
	c.page(w, http.StatusOK, "Console", `<p><a href="/console/projects">Projects</a></p>`)
}

// signIn sends the whole page to the authorization endpoint, with extra
// parameters such as the amr of a step-up challenge.
func (c *console) signIn(w http.ResponseWriter, r *http.Request, extra ...oauth2.AuthCodeOption) {
	c.mu.Lock()
	c.state, c.verifier = rand.Text(), oauth2.GenerateVerifier()
	u := c.cfg.AuthCodeURL(c.state, append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(c.verifier)}, extra...)...)
	c.mu.Unlock()
	http.Redirect(w, r, u, http.StatusFound)
}

func (c *console) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c.mu.Lock()
	state, verifier := c.state, c.verifier
	c.state = ""
	c.mu.Unlock()
	if e := q.Get("error"); e != "" {
		c.page(w, http.StatusBadRequest, "Sign-in failed", "<p>"+html.EscapeString(e+": "+q.Get("error_description"))+"</p>")
		return
	}
	if state == "" || q.Get("state") != state {
		c.page(w, http.StatusBadRequest, "Sign-in failed", "<p>Unexpected state.</p>")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	tok, err := c.cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		c.page(w, http.StatusBadGateway, "Sign-in failed", "<p>"+html.EscapeString(err.Error())+"</p>")
		return
	}
	var amr []string
	if parts := strings.Split(tok.AccessToken, "."); len(parts) == 3 {
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var claims struct{ AMR []string }
			if json.Unmarshal(payload, &claims) == nil {
				amr = claims.AMR
			}
		}
	}
	c.mu.Lock()
	c.token = tok
	c.amrs = append(c.amrs, amr)
	c.mu.Unlock()
	http.Redirect(w, r, "/console/projects", http.StatusFound)
}

// projects calls the organization API with the token; a step-up challenge
// sends the browser to sign in again with the amr the API names.
func (c *console) projects(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	if tok == nil {
		c.signIn(w, r)
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, c.issuer+"/api/orgs/team", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.page(w, http.StatusBadGateway, "Projects", "<p>"+html.EscapeString(err.Error())+"</p>")
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.mu.Lock()
	c.statuses = append(c.statuses, resp.StatusCode)
	c.mu.Unlock()
	if resp.StatusCode == http.StatusUnauthorized {
		var challenge struct {
			Error string   `json:"error"`
			AMR   []string `json:"amr"`
		}
		if json.Unmarshal(body, &challenge) == nil && challenge.Error == "insufficient_user_authentication" && len(challenge.AMR) > 0 {
			c.signIn(w, r, oauth2.SetAuthURLParam("amr", strings.Join(challenge.AMR, " ")))
			return
		}
	}
	c.page(w, http.StatusOK, "Projects", fmt.Sprintf(`<p>API status: <output id="api-status">%d</output></p><pre id="api-body">%s</pre>`,
		resp.StatusCode, html.EscapeString(string(body))))
}

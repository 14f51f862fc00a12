package authz_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin for the expected local times, wherever the test runs

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/mfa"
)

// TestConsoleDocumentationInChromium walks the console the way the
// documentation tells people to, clicking controls by the words it uses
// (their role and visible name in Chromium's accessibility tree):
//
//   - user menu → Settings → Security: the MFA required area's Enable
//     switch is disabled, with the reason and a link, for an owner
//     without MFA;
//   - user menu → My profile → Security → Set up application → Verify &
//     save, then the recovery codes with a download link;
//   - back in Settings → Security: Enable; then User security settings,
//     More → Remind on one row, and several members checked and Remind at
//     the top, over real SMTP; no Remind for oneself or for someone just
//     reminded; times in the browser's locale and zone;
//   - My profile → Security warns that Team requires MFA;
//   - Members: invite, revoke, change a role; a forged form is refused;
//   - user menu → Sign out.
//
// Every page passes its CSP, reports no errors, has its landmarks, names
// its controls and keeps AA contrast; full-page screenshots go to
// $STEPUP_SCREENSHOT_DIR for a reviewer.
func TestConsoleDocumentationInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, func(c *authz.Config) {
		withTeam(c)
		c.Mailer = mfa.SMTP{Addr: sink.Addr, RootCAs: sink.RootCAs()}
		c.MailFrom = "Stepup <no-reply@example.com>"
		c.SSOProviders[0].Name = "ACME Okta"
	})
	const (
		home     = "/"
		general  = "/orgs/team/settings"
		security = "/orgs/team/settings/security"
		members  = "/orgs/team/settings/members"
	)
	b := newChrome(t, ctx, chromium, ts.Issuer)
	// A person in Berlin with a German browser.
	if _, err := chromedp.Call(b.ctx, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: "de_DE"}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(b.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	look := func(when, shot string) {
		t.Helper()
		b.checkReports(when)
		b.checkLandmarks(when, true)
		b.checkAccessible(when, nil)
		b.checkContrast(when)
		if shot != "" {
			b.screenshot(shot)
		}
	}
	menu := func() { t.Helper(); b.toggle("DisclosureTriangle", "User menu") }

	// Signing in at the home page, which lists her organizations.
	b.open(ts.Issuer+home, "/login", "the home page without a session")
	b.fill("Username", "alice")
	b.fill("Password", alicePassword)
	b.press("button", "Sign in", home, http.StatusOK)
	for _, org := range []string{"ACME", "Team"} {
		if !b.has("link", org, in("region", "Your organizations")) {
			t.Errorf("the home page does not list %s", org)
		}
	}
	if !b.has("link", "Set it up", in("region", "Your organizations")) {
		t.Error("the home page does not say that ACME requires MFA she lacks")
	}
	look("the home page", "console-home.png")

	// User menu → Settings → Security.
	menu()
	b.press("link", "Settings", general, http.StatusOK, in("group", "Team"))
	look("Team's General tab", "console-org-general.png")
	b.press("link", "Security", security, http.StatusOK, in("navigation", "Sections"))
	if !axProperty[bool](b, "switch", "Enable", "disabled", in("region", "MFA required")) {
		t.Error("the Enable switch is usable for an owner without MFA")
	}
	if !b.has("link", "Set up multi-factor authentication", in("region", "MFA required")) {
		t.Error("the disabled switch does not link to the MFA setup")
	}
	if !b.has("option", "ACME Okta", in("region", "SSO required")) {
		t.Error("the SSO choice does not show the provider's name")
	}
	look("the Security tab without MFA", "console-org-security-no-mfa.png")

	// User menu → My profile → Security → Set up application → Verify & save.
	menu()
	b.press("link", "My profile", "/account", http.StatusOK)
	look("My profile", "console-profile.png")
	b.press("link", "Security", "/account/security", http.StatusOK, in("navigation", "Sections"))
	b.press("button", "Set up application", "/account/security", http.StatusOK)
	secret := b.text("reading the secret", chromedp.CSS("#totp-secret"))
	b.fill("Code from the app", code(t, secret, ts.Clock.Now()))
	b.press("button", "Verify & save", "/account/security/verify", http.StatusOK)
	if !b.has("heading", "Save your recovery codes") {
		t.Fatal("no recovery codes after Verify & save")
	}
	if dl := axProperty[string](b, "link", "Download codes", "download"); dl != "stepup-recovery-codes.txt" {
		t.Errorf("the download link saves as %q", dl)
	}
	file := axProperty[string](b, "link", "Download codes", "href")
	codes := chromeRun(b, "reading the codes", chromedp.Evaluate[[]string](`[...document.querySelectorAll('#recovery-codes li')].map(li => li.textContent.trim())`))
	if len(codes) != 10 || !strings.HasPrefix(file, "data:text/plain") || !strings.Contains(file, codes[0]) || !strings.Contains(file, codes[9]) {
		t.Errorf("the download holds %q, want the 10 codes %q", file, codes)
	}
	look("the recovery codes", "console-recovery-codes.png")

	// Settings → Security → Enable.
	menu()
	b.press("link", "Settings", general, http.StatusOK, in("group", "Team"))
	b.press("link", "Security", security, http.StatusOK, in("navigation", "Sections"))
	if axProperty[bool](b, "switch", "Enable", "disabled", in("region", "MFA required")) {
		t.Fatal("the Enable switch is still disabled once she has MFA")
	}
	b.press("switch", "Enable", security, http.StatusOK, in("region", "MFA required"))
	if on := axProperty[string](b, "switch", "Enable", "ariaChecked", in("region", "MFA required")); on != "true" {
		t.Errorf("after Enable the switch is aria-checked=%q", on)
	}
	if n := b.text("the notice", chromedp.CSS(`[role=status]`)); !strings.HasPrefix(n, "MFA is now required") {
		t.Errorf("after Enable the page says %q", n)
	}

	// User security settings: no reminder for herself; More → Remind for dave.
	if b.has("checkbox", "Select alice") || b.has("DisclosureTriangle", "More for alice") {
		t.Error("alice is offered a reminder for herself")
	}
	b.toggle("DisclosureTriangle", "More for dave", in("region", "User security settings"))
	b.press("button", "Remind dave", "/orgs/team/settings/remind", http.StatusOK, in("region", "User security settings"))
	if n := b.text("the notice", chromedp.CSS(`[role=status]`)); n != "Reminder sent to dave." {
		t.Errorf("after Remind for dave the page says %q", n)
	}
	if b.has("DisclosureTriangle", "More for dave") || b.has("checkbox", "Select dave") {
		t.Error("dave, reminded a moment ago, is offered another reminder")
	}
	// Several members checked, Remind at the top (carol is the only other).
	b.toggle("checkbox", "Select carol", in("region", "User security settings"))
	b.press("button", "Remind", "/orgs/team/settings/remind", http.StatusOK, in("region", "User security settings"))
	if n := b.text("the notice", chromedp.CSS(`[role=status]`)); n != "Reminder sent to carol." {
		t.Errorf("after Remind for the selection the page says %q", n)
	}
	mails := sink.Wait(2, 10*time.Second)
	var to []string
	for _, m := range mails {
		to = append(to, m.To...)
	}
	slices.Sort(to)
	if !slices.Equal(to, []string{"carol@example.com", "dave@example.com"}) {
		t.Errorf("reminders went to %q", to)
	}
	// "Last reminded" in the browser's locale and zone.
	type shown struct{ ISO, Text string }
	times := chromeRun(b, "reading the times", chromedp.Evaluate[[]shown](`[...document.querySelectorAll('time')].map(t => ({ISO: t.getAttribute('datetime'), Text: t.textContent}))`))
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if len(times) != 2 {
		t.Errorf("%d times on the page, want the two reminders: %v", len(times), times)
	}
	for _, tm := range times {
		at, err := time.Parse(time.RFC3339, tm.ISO)
		if want := at.In(berlin).Format("02.01.2006, 15:04"); err != nil || tm.Text != want {
			t.Errorf("a time shows %q, want %q in German and Berlin time", tm.Text, want)
		}
	}
	look("the Security tab after the reminders", "console-org-security.png")

	// My profile → Security warns about turning MFA off.
	menu()
	b.press("link", "My profile", "/account", http.StatusOK)
	b.press("link", "Security", "/account/security", http.StatusOK, in("navigation", "Sections"))
	warnings := chromeRun(b, "reading the warnings", chromedp.Evaluate[[]string](`[...document.querySelectorAll('.warning')].map(w => w.textContent.trim())`))
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, "Team requires multi-factor authentication") }) {
		t.Errorf("the turn-off section warns %q, want Team named", warnings)
	}
	look("the account's security with MFA on", "console-account-security.png")

	// Members: invite erin, revoke it, make dave an admin.
	menu()
	b.press("link", "Settings", general, http.StatusOK, in("group", "Team"))
	b.press("link", "Members", members, http.StatusOK, in("navigation", "Sections"))
	b.fill("Email", "erin@example.com", in("region", "Invite people"))
	b.press("button", "Send invitation", "/orgs/team/settings/invitations", http.StatusOK)
	if n := b.text("the notice", chromedp.CSS(`[role=status]`)); n != "An invitation was emailed to erin@example.com." {
		t.Errorf("after the invitation the page says %q", n)
	}
	if m := sink.Wait(3, 10*time.Second); len(m) != 3 || m[2].To[0] != "erin@example.com" {
		t.Errorf("no invitation mail for erin: %d mails", len(m))
	}
	look("the Members tab with an invitation", "console-org-members.png")
	b.press("button", "Revoke the invitation of erin@example.com", "/orgs/team/settings/invitations/revoke", http.StatusOK)
	if b.has("region", "Open invitations") {
		t.Error("the revoked invitation is still listed")
	}
	b.do("choosing admin for dave", axMark("combobox", "Role of dave"), chromedp.SetValue(chromedp.CSS(`[data-test-target]`), "admin"))
	b.press("button", "Change the role of dave", "/orgs/team/settings/members/role", http.StatusOK)
	if n := b.text("the notice", chromedp.CSS(`[role=status]`)); n != "dave is now an admin (was member)." {
		t.Errorf("after the role change the page says %q", n)
	}
	if b.has("button", "Remove alice from Team") {
		t.Error("alice is offered to remove herself (leaving is on the General tab)")
	}
	b.checkReports("the Members tab")

	// A form whose CSRF token was changed in the page is refused.
	chromeRun(b, "forging the invite form", chromedp.Evaluate[int](`document.querySelectorAll('input[name=csrf_token]').forEach(i => { i.value = 'forged' + i.value.slice(6); }); 0`))
	b.fill("Email", "mallory@example.com", in("region", "Invite people"))
	b.press("button", "Send invitation", "/orgs/team/settings/invitations", http.StatusForbidden)
	if body := chromeRun(b, "reading the page", chromedp.Evaluate[string](`document.body.innerText`)); !strings.Contains(body, "This form has expired or did not come from this site.") {
		t.Errorf("the forged form got %q", body)
	}
	for _, m := range b.newBadMessages() {
		if !strings.Contains(m, "status of 403") {
			t.Errorf("the forged form: the browser reported %s", m)
		}
	}
	if n := len(sink.Messages()); n != 3 {
		t.Errorf("%d mails in all, want 3", n)
	}

	// User menu → Sign out.
	b.open(ts.Issuer+home, home, "the home page")
	menu()
	b.press("button", "Sign out", "/oauth2/logout", http.StatusOK)
	if h := b.text("the page", chromedp.CSS("h1")); h != "Signed out" {
		t.Errorf("after Sign out the page is %q", h)
	}
	b.open(ts.Issuer+home, "/login", "the home page after signing out")
	b.checkReports("signing out")
}

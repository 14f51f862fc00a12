package authz_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestInvitationInChromium walks the invitation story in a real browser:
// alice invites erin by email; erin opens the link from the captured mail,
// sets a password, signs in with it, and appears in team's member list
// with MFA "Not enabled".
func TestInvitationInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, withMail(sink))
	_, alice := loginAs(t, ts, "alice")
	if status, _, body := call(t, "POST", ts.Issuer+"/api/orgs/team/invitations", alice.AccessToken,
		map[string]any{"email": "erin@example.com", "role": "member"}); status != 201 {
		t.Fatalf("invite: %d %v", status, body)
	}
	link := linkIn(t, sink, 1)
	path := strings.TrimPrefix(link, ts.Issuer)

	b := newChrome(t, ctx, chromium, ts.Issuer)
	b.open(link, path, "the invitation link")
	if lead := b.text("the invitation", chromedp.CSS(".lead")); !strings.Contains(lead, "alice invites you to join Team as a member") {
		t.Errorf("the invitation says %q", lead)
	}
	b.checkAccessible("the invitation page", []string{"username", "password", "password_again"})
	b.screenshot("stepup-invitation.png")
	b.do("choosing a username and password",
		chromedp.SendKeys(chromedp.ID("username"), "erin"),
		chromedp.SendKeys(chromedp.ID("password"), "erin's long password"),
		chromedp.SendKeys(chromedp.ID("password_again"), "erin's long password"))
	b.click("Create account and join", path, http.StatusOK)
	if msg := b.text("the welcome", chromedp.CSS("main p")); !strings.Contains(msg, "You are now a member of Team") {
		t.Fatalf("after joining the page says %q", msg)
	}
	b.checkReports("joining")

	// erin signs in with her new password, in a fresh browser, over the CLI's
	// flow; then alice's settings page lists her without MFA.
	b2 := newBrowser(t, ts.Issuer)
	if r := b2.login(loginPage(t, ts, b2), "erin", "erin's long password"); r.StatusCode != http.StatusSeeOther || redirectOf(t, r).Query().Get("code") == "" {
		t.Fatalf("erin signing in: %d %s", r.StatusCode, r.Body)
	}
	_, _, list := call(t, "GET", ts.Issuer+"/api/orgs/team/members", alice.AccessToken, nil)
	for _, m := range list["members"].([]any) {
		if m := m.(map[string]any); m["username"] == "erin" {
			if m["mfa_enabled"] != false || m["role"] != "member" {
				t.Fatalf("erin in the members list: %v", m)
			}
			return
		}
	}
	t.Fatalf("erin is not in the members list: %v", list)
}

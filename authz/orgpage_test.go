package authz_test

import (
	"net/url"
	"strings"
	"testing"
)

func TestOrgSettingsPage(t *testing.T) {
	ts := newTestServer(t, withTeam)
	settings := ts.Issuer + "/orgs/team/settings/security"
	alice, _ := loginAs(t, ts, "alice")

	p := alice.get(settings)
	if p.StatusCode != 200 || !strings.Contains(p.Body, "User security settings") || !strings.Contains(p.Body, "dave@example.com") ||
		!strings.Contains(p.Body, `role="switch" aria-checked="false"`) || !strings.Contains(p.Body, `<option value="acme"`) {
		t.Fatalf("settings page for the owner: %d %s", p.StatusCode, p.Body)
	}
	// Without MFA of her own, the switch is disabled and says why.
	if !strings.Contains(p.Body, `mfa-why" disabled>Enable</button>`) || !strings.Contains(p.Body, "only after turning it on for your own account") {
		t.Errorf("the switch for an owner without MFA is not disabled with a reason: %s", p.Body)
	}
	// alice is not offered a reminder for herself.
	if strings.Contains(p.Body, `aria-label="Remind alice"`) || !strings.Contains(p.Body, `aria-label="Remind dave"`) {
		t.Errorf("the Remind buttons: %s", p.Body)
	}
	// A member may not see it.
	dave, _ := loginAs(t, ts, "dave")
	if p := dave.get(settings); p.StatusCode != 403 || !strings.Contains(p.Body, "owners and admins") {
		t.Fatalf("a member: %d at %s", p.StatusCode, p.Request.URL)
	}
	form := url.Values{"csrf_token": {formValues(p).Get("csrf_token")}, "mfa_required": {"on"}}
	if r := alice.post(settings, form); r.StatusCode != 409 || !strings.Contains(r.Body, "your own account first") || !strings.Contains(r.Body, `href="/account/security"`) {
		t.Fatalf("require MFA without MFA: %d", r.StatusCode)
	}
	if r := alice.post(settings, url.Values{"csrf_token": form["csrf_token"]}); r.StatusCode != 400 || !strings.Contains(r.Body, "Nothing to change") {
		t.Fatalf("a form with neither setting: %d", r.StatusCode)
	}
	enroll(t, ts, alice)
	if r := alice.post(settings, form); r.StatusCode != 200 || !strings.Contains(r.Body, "MFA is now required") || !strings.Contains(r.Body, `role="switch" aria-checked="true"`) {
		t.Fatalf("require MFA with MFA: %d %s", r.StatusCode, r.Body)
	}
	// Remind one member, then a selection.
	remind := ts.Issuer + "/orgs/team/settings/remind"
	one := url.Values{"csrf_token": {form.Get("csrf_token")}, "only": {"u_dave"}}
	if r := alice.post(remind, one); r.StatusCode != 200 || !strings.Contains(r.Body, "Reminder for dave written to the server&#39;s log: this server has no mail relay (smtp) configured, so no email was sent.") {
		t.Fatalf("remind dave: %d %s", r.StatusCode, r.Body)
	}
	sel := url.Values{"csrf_token": {form.Get("csrf_token")}, "user_id": {"u_dave", "u_carol"}}
	if r := alice.post(remind, sel); !strings.Contains(r.Body, "Reminder for carol written to the server&#39;s log") || !strings.Contains(r.Body, "Not sent to dave: was reminded recently.") {
		t.Fatalf("remind a selection: %d %s", r.StatusCode, r.Body)
	}
	if r := alice.post(remind, url.Values{"only": {"u_dave"}}); r.StatusCode != 403 {
		t.Fatalf("without the CSRF token: %d", r.StatusCode)
	}

	// Once MFA is required, the organization's policy comes before roles:
	// a member without MFA is sent to set it up.
	if p := dave.get(settings); !strings.HasPrefix(p.Request.URL.Path, "/account/security") {
		t.Fatalf("a member without MFA, MFA required: %d at %s", p.StatusCode, p.Request.URL)
	}
	// A non-member cannot tell the organization exists.
	bob, _ := loginAs(t, ts, "bob")
	if p := bob.get(settings); p.StatusCode != 404 {
		t.Fatalf("a non-member: %d", p.StatusCode)
	}
	if p := bob.get(ts.Issuer + "/orgs/no-such-org/settings/security"); p.StatusCode != 404 {
		t.Fatalf("no such organization: %d", p.StatusCode)
	}
	// An admin without MFA, now that MFA is required, is sent to set it up
	// first and comes back.
	carol, _ := loginAs(t, ts, "carol")
	if p := carol.get(settings); !strings.HasPrefix(p.Request.URL.Path, "/account/security") || !strings.Contains(p.Body, "Set up application") ||
		!strings.Contains(p.Body, "Team requires multi-factor authentication to continue to the Stepup console.") {
		t.Fatalf("an admin without MFA: %d at %s: %s", p.StatusCode, p.Request.URL, p.Body)
	}
	// Without a session, the page asks to log in.
	if p := newBrowser(t, ts.Issuer).get(settings); !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Fatalf("without a session: %s", p.Request.URL)
	}

	// The SSO form changes the provider and leaves MFA as it is. alice has
	// not signed in through it, so the next page sends her there (this
	// test's provider does not answer).
	sso := url.Values{"csrf_token": form["csrf_token"], "sso_provider": {"acme"}}
	if r := alice.post(settings, sso); r.StatusCode != 200 || !strings.Contains(r.Body, `<option value="acme" selected>`) || !strings.Contains(r.Body, `aria-checked="true"`) {
		t.Fatalf("choose an SSO provider: %d %s", r.StatusCode, r.Body)
	}
	if p := alice.get(settings); p.Request.URL.Path != "/sso/acme/start" || !strings.Contains(p.Body, "cannot be reached") {
		t.Fatalf("after requiring SSO: %d at %s: %s", p.StatusCode, p.Request.URL, p.Body)
	}
}

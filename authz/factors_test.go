package authz_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// disableMFA turns alice's MFA off from b's account page.
func disableMFA(t *testing.T, ts *testServer, b *browser, secret string) {
	t.Helper()
	form := formValues(b.get(ts.Issuer + "/account/security"))
	form.Set("code", code(t, secret, ts.Clock.Now().Add(30*time.Second)))
	if r := b.post(ts.Issuer+"/account/security/disable", form); r.StatusCode != 200 || !strings.Contains(r.Body, "Multi-factor authentication is off") {
		t.Fatalf("turning MFA off: %d %s", r.StatusCode, r.Body)
	}
}

func refresh(t *testing.T, ts *testServer, rt string) (int, map[string]any) {
	t.Helper()
	return postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {cliClient}}, "", "")
}

// TestTurningMFAOffForgetsOldCodes: once a person turns MFA off (or sets
// it up anew), the otp they proved before no longer counts anywhere: not in
// the browser's session, not in refresh families, not at the API.
//
// The clock moves on by just over a second between the steps, so that each
// happens in a second of its own (tokens say auth_time in seconds), and by
// no more: fosite refuses an auth_time more than 5 s ahead of the real
// clock.
func TestTurningMFAOffForgetsOldCodes(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b)
	secret, _ := enroll(t, ts, b) // b's session now has the otp factor
	mfaTok, _ := exchange(t, ts, b, oauth2.SetAuthURLParam("amr", "mfa"))
	if got := amrOf(t, mfaTok); !slices.Equal(got, []string{"otp", "pwd", "mfa"}) {
		t.Fatalf("setup: amr = %v", got)
	}
	ts.Clock.Advance(1100 * time.Millisecond)
	disableMFA(t, ts, b, secret)
	ts.Clock.Advance(1100 * time.Millisecond)

	// The session's old otp no longer satisfies amr=mfa: with no
	// authenticator left, the person is sent to set one up.
	cfg := cliConfig(ts.Issuer, "53682")
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("amr", "mfa")))
	if p.Request.URL.Path != "/account/security" {
		t.Fatalf("amr=mfa after MFA was turned off: %d at %s (Location %q), want the setup page", p.StatusCode, p.Request.URL, p.Header.Get("Location"))
	}
	// The refresh family that carries the otp is refused...
	if status, body := refresh(t, ts, mfaTok.RefreshToken); status != 400 || body["error"] != "invalid_grant" ||
		!strings.Contains(body["error_description"].(string), "second factor") {
		t.Fatalf("refreshing an otp grant after MFA was turned off: %d %v", status, body)
	}
	// ...and so is its access token at the API.
	if status, _, body := call(t, "GET", ts.Issuer+"/api/me", mfaTok.AccessToken, nil); status != 401 || !strings.Contains(body["error_description"].(string), "second factor") {
		t.Fatalf("an otp access token after MFA was turned off: %d %v", status, body)
	}

	// Setting MFA up again does not bring the old grant back.
	ts.Clock.Advance(1100 * time.Millisecond)
	secret2, _ := enroll(t, ts, b)
	if secret2 == secret {
		t.Fatal("setup: the new authenticator has the old secret")
	}
	if status, body := refresh(t, ts, mfaTok.RefreshToken); status != 400 || body["error"] != "invalid_grant" {
		t.Fatalf("refreshing the old otp grant after MFA was set up again: %d %v", status, body)
	}
	// A code of the new authenticator makes a grant that refreshes.
	fresh, _ := exchange(t, ts, b, oauth2.SetAuthURLParam("amr", "mfa"))
	if status, body := refresh(t, ts, fresh.RefreshToken); status != 200 {
		t.Fatalf("refreshing a grant of the new authenticator: %d %v", status, body)
	}
}

// TestAPITokenLimits: API tokens expire, and the access tokens they buy
// carry only what still holds of the login that made them.
func TestAPITokenLimits(t *testing.T) {
	t.Run("expiry", func(t *testing.T) {
		ts := newTestServer(t, func(c *authz.Config) { c.APITokenTTL = 30 * 24 * time.Hour })
		tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
		tokensURL := ts.Issuer + "/api/me/api-tokens"
		status, _, long := call(t, "POST", tokensURL, tok.AccessToken, map[string]any{"name": "default"})
		if status != 201 {
			t.Fatalf("create: %d %v", status, long)
		}
		exp, err := time.Parse(time.RFC3339, long["expires_at"].(string))
		if err != nil || exp.Sub(ts.Clock.Now()) < 29*24*time.Hour || exp.Sub(ts.Clock.Now()) > 30*24*time.Hour {
			t.Fatalf("expires_at %v, want 30 days from now", long["expires_at"])
		}
		status, _, short := call(t, "POST", tokensURL, tok.AccessToken, map[string]any{"name": "a day", "expires_in": 86400})
		if status != 201 {
			t.Fatalf("create with expires_in: %d %v", status, short)
		}
		for _, bad := range []int64{0, 59, 31 * 86400} {
			if status, _, body := call(t, "POST", tokensURL, tok.AccessToken, map[string]any{"name": "x", "expires_in": bad}); status != 400 || !strings.Contains(body["error_description"].(string), "30 days") {
				t.Errorf("expires_in %d: %d %v", bad, status, body)
			}
		}
		_, _, list := call(t, "GET", tokensURL, tok.AccessToken, nil)
		for _, it := range list["tokens"].([]any) {
			if it.(map[string]any)["expires_at"] == nil {
				t.Errorf("listed without expires_at: %v", it)
			}
		}
		grant := func(raw string) (int, map[string]any) {
			return postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {raw}, "client_id": {cliClient}}, "", "")
		}
		ts.Clock.Advance(2 * 24 * time.Hour)
		if status, body := grant(short["token"].(string)); status != 400 || body["error"] != "invalid_grant" || !strings.Contains(body["error_description"].(string), "expired") {
			t.Fatalf("a one-day token two days later: %d %v", status, body)
		}
		if status, body := grant(long["token"].(string)); status != 200 {
			t.Fatalf("the 30-day token two days later: %d %v", status, body)
		}
		ts.Clock.Advance(29 * 24 * time.Hour)
		if status, body := grant(long["token"].(string)); status != 400 || !strings.Contains(body["error_description"].(string), "expired") {
			t.Fatalf("the 30-day token after 31 days: %d %v", status, body)
		}
	})

	t.Run("mfa-turned-off", func(t *testing.T) {
		ts := newTestServer(t, nil)
		b := newBrowser(t, ts.Issuer)
		exchange(t, ts, b)
		secret, _ := enroll(t, ts, b)
		mfaTok, _ := exchange(t, ts, b, oauth2.SetAuthURLParam("amr", "mfa"))
		status, _, created := call(t, "POST", ts.Issuer+"/api/me/api-tokens", mfaTok.AccessToken, map[string]any{"name": "ci"})
		if status != 201 || !slices.Equal(strs(created["amr"]), []string{"otp", "pwd", "mfa"}) {
			t.Fatalf("create: %d %v", status, created)
		}
		ts.Clock.Advance(time.Minute)
		disableMFA(t, ts, b, secret)
		status, body := postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {created["token"].(string)}, "client_id": {cliClient}}, "", "")
		if status != 200 {
			t.Fatalf("exchange: %d %v", status, body)
		}
		_, c := jwtParts(t, body["access_token"].(string))
		if got := strs(c["amr"]); !slices.Equal(got, []string{"pwd"}) {
			t.Fatalf("amr of an API token made with MFA, after MFA was turned off: %v, want [pwd]", got)
		}
	})

	t.Run("sso-session-age", func(t *testing.T) {
		f := newFederation(t, false)
		b := f.browser(t)
		cfg := cliConfig(f.local.Issuer, "53682")
		v := oauth2.GenerateVerifier()
		p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
		p = f.viaUpstream(t, b, b.get(f.local.Issuer+htmlUnescape(ssoLink.FindStringSubmatch(p.Body)[1])), "alice")
		tok := tokensFrom(t, f.local, p, v)
		status, _, created := call(t, "POST", f.local.Issuer+"/api/me/api-tokens", tok.AccessToken, map[string]any{"name": "sso"})
		if status != 201 {
			t.Fatalf("create: %d %v", status, created)
		}
		grant := func() (int, map[string]any) {
			return postForm(t, f.local.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {created["token"].(string)}, "client_id": {cliClient}}, "", "")
		}
		if status, body := grant(); status != 200 {
			t.Fatalf("exchange within the SSO session: %d %v", status, body)
		}
		f.local.Clock.Advance(2 * time.Hour) // past the provider's max_session_age of an hour
		if status, body := grant(); status != 400 || body["error"] != "invalid_grant" || !strings.Contains(body["error_description"].(string), "SSO session has expired") {
			t.Fatalf("exchange after the SSO session lapsed: %d %v", status, body)
		}
	})
}

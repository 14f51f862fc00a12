package authz_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
)

const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code"

// withDevice lets the CLI client use the device grant, and adds an
// organization that requires MFA and nothing else, with alice in it.
func withDevice(c *authz.Config) {
	c.Clients[0].GrantTypes = append(c.Clients[0].GrantTypes, deviceGrant)
	c.Orgs = append(c.Orgs, authz.Org{ID: "secure", Name: "Secure", MFARequired: true,
		Members: []authz.Member{{UserID: "u_alice", Role: "member"}}})
}

// deviceAuth is a device authorization response.
type deviceAuth struct {
	DeviceCode, UserCode, URI, Complete string
	ExpiresIn, Interval                 float64
}

var userCodeShape = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)

// startDevice asks for a device code as the CLI does; extra adds to the
// form.
func startDevice(t *testing.T, ts *testServer, extra url.Values) deviceAuth {
	t.Helper()
	form := url.Values{"client_id": {cliClient}, "scope": {"openid offline_access profile"}}
	for k, v := range extra {
		form[k] = v
	}
	status, body := postForm(t, ts.Issuer+"/oauth2/device_authorization", form, "", "")
	if status != http.StatusOK {
		t.Fatalf("device authorization: %d %v", status, body)
	}
	d := deviceAuth{}
	d.DeviceCode, _ = body["device_code"].(string)
	d.UserCode, _ = body["user_code"].(string)
	d.URI, _ = body["verification_uri"].(string)
	d.Complete, _ = body["verification_uri_complete"].(string)
	d.ExpiresIn, _ = body["expires_in"].(float64)
	d.Interval, _ = body["interval"].(float64)
	return d
}

// poll asks the token endpoint once, as a polling device does.
func poll(t *testing.T, ts *testServer, deviceCode string) (int, map[string]any) {
	t.Helper()
	return postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {deviceGrant}, "device_code": {deviceCode},
		"client_id": {cliClient}}, "", "")
}

func wantPollError(t *testing.T, ts *testServer, deviceCode, want string) {
	t.Helper()
	status, body := poll(t, ts, deviceCode)
	if status != http.StatusBadRequest || body["error"] != want {
		t.Fatalf("poll: %d %v, want 400 %s", status, body, want)
	}
}

// confirmPage opens the complete verification URI in b and checks that it
// asks Allow or Deny.
func confirmPage(t *testing.T, b *browser, d deviceAuth) page {
	t.Helper()
	p := b.get(d.Complete)
	if p.StatusCode != http.StatusOK || p.Request.URL.Path != "/device" || !strings.Contains(p.Body, `value="allow"`) ||
		!strings.Contains(p.Body, `value="deny"`) || !strings.Contains(p.Body, d.UserCode) {
		t.Fatalf("the device page at %s: %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
	return p
}

// decide presses Allow or Deny on the confirmation page.
func decide(t *testing.T, ts *testServer, b *browser, p page, decision string) page {
	t.Helper()
	form := formValues(p)
	form.Set("decision", decision)
	return b.post(ts.Issuer+"/device", form)
}

// TestDeviceFlow: the device asks, polls (pending, then too fast), the
// person allows it in a signed-in browser, and the next poll gets what a
// code exchange gives: a JWT access token with the session's amr and
// auth_time, an ID token and a refresh token that works. The device code
// then is spent.
func TestDeviceFlow(t *testing.T) {
	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, nil)
	if !strings.HasPrefix(d.DeviceCode, "stpd_") || !userCodeShape.MatchString(d.UserCode) || d.URI != ts.Issuer+"/device" ||
		d.Complete != d.URI+"?user_code="+d.UserCode || d.ExpiresIn != 600 || d.Interval != 5 {
		t.Fatalf("device authorization response %+v", d)
	}
	wantPollError(t, ts, d.DeviceCode, "authorization_pending")
	wantPollError(t, ts, d.DeviceCode, "slow_down") // at once, not 5 s later
	ts.Clock.Advance(4500 * time.Millisecond)
	// The interval is now 10 s: 4.5 s later is too soon again.
	wantPollError(t, ts, d.DeviceCode, "slow_down")

	b, _ := loginAs(t, ts, "alice")
	p := confirmPage(t, b, d)
	for _, want := range []string{"Stepup CLI", "alice", "See your name and username", "(offline_access)"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("the confirmation does not say %q: %s", want, p.Body)
		}
	}
	// Confirmation is asked even though the URL carried the code.
	wantPollError(t, ts, d.DeviceCode, "slow_down")
	done := decide(t, ts, b, p, "allow")
	if done.StatusCode != http.StatusOK || !strings.Contains(done.Body, "You can return to your terminal.") {
		t.Fatalf("after Allow: %d %s", done.StatusCode, done.Body)
	}

	ts.Clock.Advance(15 * time.Second)
	status, body := poll(t, ts, d.DeviceCode)
	if status != http.StatusOK {
		t.Fatalf("poll after Allow: %d %v", status, body)
	}
	access, _ := body["access_token"].(string)
	header, claims := jwtParts(t, access)
	if header["typ"] != "at+jwt" || claims["sub"] != "u_alice" || claims["client_id"] != cliClient || claims["grant"] != deviceGrant ||
		!slices.Equal(toStrings(claims["amr"]), []string{"pwd"}) || claims["auth_time"] == nil {
		t.Fatalf("access token %v %v", header, claims)
	}
	if _, id := jwtParts(t, body["id_token"].(string)); id["sub"] != "u_alice" || !slices.Equal(toStrings(id["amr"]), []string{"pwd"}) ||
		id["auth_time"] != claims["auth_time"] || id["at_hash"] == nil || id["preferred_username"] != "alice" {
		t.Fatalf("ID token %v", id)
	}
	if body["token_type"] != "bearer" || body["expires_in"] == nil || body["refresh_token"] == nil {
		t.Fatalf("token response %v", body)
	}
	if !active(t, ts, access) {
		t.Fatal("the access token is not active")
	}
	// The refresh token works, and keeps the login's amr and grant.
	cfg := cliConfig(ts.Issuer, "53682")
	old := &oauth2.Token{AccessToken: access, RefreshToken: body["refresh_token"].(string), Expiry: time.Now().Add(-time.Minute)}
	fresh, err := cfg.TokenSource(bg, old).Token()
	if err != nil {
		t.Fatalf("refreshing: %v", err)
	}
	if _, c := jwtParts(t, fresh.AccessToken); !slices.Equal(toStrings(c["amr"]), []string{"pwd"}) || c["grant"] != deviceGrant || c["jti"] == claims["jti"] {
		t.Fatalf("refreshed access token %v", c)
	}
	// /api/me takes it: the device is signed in as alice.
	if status, _, me := call(t, "GET", ts.Issuer+"/api/me", fresh.AccessToken, nil); status != http.StatusOK || me["username"] != "alice" {
		t.Fatalf("/api/me: %d %v", status, me)
	}

	// Spent: a replay fails, and the page says so.
	wantPollError(t, ts, d.DeviceCode, "invalid_grant")
	if p := b.get(d.Complete); p.StatusCode != http.StatusConflict || !strings.Contains(p.Body, "already used") {
		t.Fatalf("the page for a used code: %d %s", p.StatusCode, p.Body)
	}
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestDeviceDeny: Deny on the page is access_denied at the device.
func TestDeviceDeny(t *testing.T) {
	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, nil)
	b, _ := loginAs(t, ts, "alice")
	done := decide(t, ts, b, confirmPage(t, b, d), "deny")
	if done.StatusCode != http.StatusOK || !strings.Contains(done.Body, "You denied the sign-in of Stepup CLI") {
		t.Fatalf("after Deny: %d %s", done.StatusCode, done.Body)
	}
	status, body := poll(t, ts, d.DeviceCode)
	if status != http.StatusBadRequest || body["error"] != "access_denied" || !strings.Contains(body["error_description"].(string), "denied") {
		t.Fatalf("poll after Deny: %d %v", status, body)
	}
}

// TestDeviceExpiry: ten minutes on, the device hears expired_token and the
// page says the code has expired, whether or not anyone allowed it.
func TestDeviceExpiry(t *testing.T) {
	ts := newTestServer(t, withDevice)
	b, _ := loginAs(t, ts, "alice")
	pending := startDevice(t, ts, nil)
	allowed := startDevice(t, ts, nil)
	decide(t, ts, b, confirmPage(t, b, allowed), "allow")
	ts.Clock.Advance(10*time.Minute + time.Second)
	wantPollError(t, ts, pending.DeviceCode, "expired_token")
	wantPollError(t, ts, allowed.DeviceCode, "expired_token")
	if p := b.get(pending.Complete); p.StatusCode != http.StatusGone || !strings.Contains(p.Body, "This code has expired") {
		t.Fatalf("the page for an expired code: %d %s", p.StatusCode, p.Body)
	}
	// Long after, the record is gone: the code is simply not valid.
	ts.Clock.Advance(time.Hour)
	wantPollError(t, ts, pending.DeviceCode, "invalid_grant")
}

// TestDeviceCodeUsedOnce: polls at once after Allow, on memory and on
// Redis: exactly one gets tokens, the others invalid_grant.
func TestDeviceCodeUsedOnce(t *testing.T) {
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, func(c *authz.Config) {
				withDevice(c)
				if store != nil {
					store(c)
				}
			})
			d := startDevice(t, ts, nil)
			b, _ := loginAs(t, ts, "alice")
			decide(t, ts, b, confirmPage(t, b, d), "allow")
			const n = 8
			var wg sync.WaitGroup
			statuses := make([]int, n)
			bodies := make([]map[string]any, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					statuses[i], bodies[i] = poll(t, ts, d.DeviceCode)
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for i := range n {
				switch {
				case statuses[i] == http.StatusOK && bodies[i]["access_token"] != nil:
					won++
				case statuses[i] == http.StatusBadRequest && bodies[i]["error"] == "invalid_grant":
				default:
					t.Errorf("poll %d: %d %v", i, statuses[i], bodies[i])
				}
			}
			if won != 1 {
				t.Fatalf("%d of %d polls got tokens, want 1", won, n)
			}
		})
	}
}

// TestDeviceUserCodeForms: the code is taken in any case, with or without
// the dash, with spaces; the entry form leads to the confirmation.
func TestDeviceUserCodeForms(t *testing.T) {
	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, nil)
	b, _ := loginAs(t, ts, "alice")
	entry := b.get(ts.Issuer + "/device")
	if entry.StatusCode != http.StatusOK || !strings.Contains(entry.Body, `name="user_code"`) || strings.Contains(entry.Body, `value="allow"`) {
		t.Fatalf("the entry form: %d %s", entry.StatusCode, entry.Body)
	}
	raw := strings.ReplaceAll(d.UserCode, "-", "")
	for _, typed := range []string{strings.ToLower(d.UserCode), raw, " " + raw[:4] + " " + strings.ToLower(raw[4:]) + " "} {
		form := formValues(entry)
		form.Set("user_code", typed)
		p := b.post(ts.Issuer+"/device", form)
		if p.StatusCode != http.StatusOK || !strings.Contains(p.Body, `value="allow"`) || !strings.Contains(p.Body, d.UserCode) {
			t.Fatalf("entering %q: %d %s", typed, p.StatusCode, p.Body)
		}
	}
}

// TestDeviceWrongCodesThrottled: wrong codes are counted per browser, per
// person and per address; past the limit the page says when to try again,
// even for the right code.
func TestDeviceWrongCodesThrottled(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		withDevice(c)
		c.MaxFailuresPerAccount = 3
		c.MaxFailuresPerAddress = 8
	})
	d := startDevice(t, ts, nil)
	wrong := "BBBB-BBBB"
	if wrong == d.UserCode {
		wrong = "CCCC-CCCC"
	}
	try := func(b *browser, code string) page {
		t.Helper()
		entry := b.get(ts.Issuer + "/device")
		form := formValues(entry)
		form.Set("user_code", code)
		return b.post(ts.Issuer+"/device", form)
	}
	// Per browser: three wrong codes, then even the right one waits.
	b1, _ := loginAs(t, ts, "alice")
	b1.from("198.51.100.1")
	for i := range 3 {
		if p := try(b1, wrong); p.StatusCode != http.StatusNotFound || !strings.Contains(p.Body, "That code is not right") {
			t.Fatalf("wrong code %d: %d %s", i+1, p.StatusCode, p.Body)
		}
	}
	p := try(b1, d.UserCode)
	if p.StatusCode != http.StatusTooManyRequests || !strings.Contains(p.Body, "Too many wrong codes. Try again in 15 minutes.") {
		t.Fatalf("the right code after three wrong ones: %d %s", p.StatusCode, p.Body)
	}
	// Malformed input is not a guess and is not counted; it is explained.
	b2, _ := loginAs(t, ts, "bob")
	b2.from("198.51.100.1")
	if p := try(b2, "ABC-123"); p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, "That is not a device code") {
		t.Fatalf("a malformed code: %d %s", p.StatusCode, p.Body)
	}
	// Per address: bob's browser on the same address has its own count
	// until the address has had eight.
	for i := range 3 {
		if p := try(b2, wrong); p.StatusCode != http.StatusNotFound {
			t.Fatalf("bob's wrong code %d: %d %s", i+1, p.StatusCode, p.Body)
		}
	}
	b3, _ := loginAs(t, ts, "bob")
	b3.from("198.51.100.1")
	for i := range 2 {
		if p := try(b3, wrong); p.StatusCode != http.StatusNotFound {
			t.Fatalf("bob's second browser, wrong code %d: %d %s", i+1, p.StatusCode, p.Body)
		}
	}
	b4, _ := loginAs(t, ts, "alice")
	b4.from("198.51.100.1")
	if p := try(b4, d.UserCode); p.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a new browser on an address with eight wrong codes: %d %s", p.StatusCode, p.Body)
	}
	// Elsewhere, alice's new browser still can.
	b5, _ := loginAs(t, ts, "alice")
	b5.from("203.0.113.9")
	if p := try(b5, d.UserCode); p.StatusCode != http.StatusOK || !strings.Contains(p.Body, `value="allow"`) {
		t.Fatalf("alice elsewhere: %d %s", p.StatusCode, p.Body)
	}
}

// TestDeviceStepUpMFA: a device login for an organization that requires
// MFA (acr_values) sends a person without MFA to set it up, and back to
// the confirmation; the tokens carry mfa. A person with MFA is asked for
// the code first, as every sign-in of theirs is.
func TestDeviceStepUpMFA(t *testing.T) {
	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, url.Values{"acr_values": {"urn:stepup:org:secure"}})
	b, _ := loginAs(t, ts, "alice")
	p := b.get(d.Complete)
	if p.Request.URL.Path != "/account/security" || !strings.Contains(p.Body, "Secure requires multi-factor authentication to continue to Stepup CLI") {
		t.Fatalf("a device login for Secure without MFA: %s %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
	p = b.post(ts.Issuer+"/account/security/setup", formValues(p))
	m := secretOnPage.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("the setup page: %s", p.Body)
	}
	form := formValues(p)
	form.Set("code", code(t, m[1], ts.Clock.Now()))
	p = b.post(ts.Issuer+"/account/security/verify", form)
	cont := regexp.MustCompile(`<a class="button" href="([^"]+)">I have saved them`).FindStringSubmatch(p.Body)
	if cont == nil || htmlUnescape(cont[1]) != "/device?user_code="+d.UserCode {
		t.Fatalf("after enrolling, no way back to the device page: %s", p.Body)
	}
	p = b.get(ts.Issuer + htmlUnescape(cont[1]))
	if !strings.Contains(p.Body, `value="allow"`) {
		t.Fatalf("back on the device page: %d %s", p.StatusCode, p.Body)
	}
	decide(t, ts, b, p, "allow")
	ts.Clock.Advance(6 * time.Second)
	status, body := poll(t, ts, d.DeviceCode)
	if status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, body)
	}
	if _, c := jwtParts(t, body["access_token"].(string)); !slices.Contains(toStrings(c["amr"]), "mfa") {
		t.Fatalf("amr after the step-up: %v", c["amr"])
	}
	ts.Clock.Advance(-6 * time.Second)

	// alice has MFA now: a new browser signs in with the password, is
	// asked for the code, and comes back to the device page.
	d2 := startDevice(t, ts, url.Values{"acr_values": {"urn:stepup:org:secure"}})
	b2 := newBrowser(t, ts.Issuer)
	p = b2.get(d2.Complete)
	p = b2.login(p, "alice", alicePassword)
	if p.Request.URL.Path != "/login/otp" {
		t.Fatalf("after the password: %s %s", p.Request.URL, p.Body)
	}
	form = formValues(p)
	form.Set("code", code(t, m[1], ts.Clock.Now().Add(30*time.Second)))
	p = b2.post(ts.Issuer+"/login/otp", form)
	if p.Request.URL.Path != "/device" || !strings.Contains(p.Body, `value="allow"`) {
		t.Fatalf("after the code: %s %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
}

// TestDeviceStepUpSSO: a device login for an organization that requires
// its SSO provider sends the signed-in person through the provider from
// the device page, back to it, and the device's tokens carry both the
// password and the provider.
func TestDeviceStepUpSSO(t *testing.T) {
	f := federateWith(t, false, false, nil, func(c *authz.Config) {
		withDevice(c)
		c.Orgs = append(c.Orgs, authz.Org{ID: "ssoonly", Name: "SSO Only", SSOProvider: "acme",
			Members: []authz.Member{{UserID: "u_alice", Role: "member"}}})
	})
	b := f.browser(t)
	exchange(t, f.local, b) // signed in with the password
	d := startDevice(t, f.local, url.Values{"acr_values": {"urn:stepup:org:ssoonly"}})
	p := b.get(d.Complete)
	if m := ssoLink.FindStringSubmatch(p.Body); m != nil {
		p = b.get(f.local.Issuer + htmlUnescape(m[1]))
	}
	p = f.viaUpstream(t, b, p, "alice")
	if p.Request.URL.Path != "/device" || !strings.Contains(p.Body, `value="allow"`) {
		t.Fatalf("back from the provider: %s %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
	decide(t, f.local, b, p, "allow")
	f.local.Clock.Advance(6 * time.Second)
	defer f.local.Clock.Advance(-6 * time.Second)
	status, body := poll(t, f.local, d.DeviceCode)
	if status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, body)
	}
	if _, c := jwtParts(t, body["access_token"].(string)); !slices.Equal(toStrings(c["amr"]), []string{"pwd", "sso:acme"}) {
		t.Fatalf("amr after the SSO step-up: %v", c["amr"])
	}
}

// TestDeviceMaxAge: max_age=0 asks for a sign-in after the device asked,
// even of a browser signed in before; once made, it is enough (no loop).
func TestDeviceMaxAge(t *testing.T) {
	ts := newTestServer(t, withDevice)
	b, _ := loginAs(t, ts, "alice")
	ts.Clock.Advance(2 * time.Second)
	d := startDevice(t, ts, url.Values{"max_age": {"0"}})
	p := b.get(d.Complete)
	if p.Request.URL.Path != "/login" {
		t.Fatalf("max_age=0 with an older session: %s %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
	p = b.login(p, "alice", alicePassword)
	if p.Request.URL.Path != "/device" || !strings.Contains(p.Body, `value="allow"`) {
		t.Fatalf("after signing in again: %s %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
	decide(t, ts, b, p, "allow")
	if status, body := poll(t, ts, d.DeviceCode); status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, body)
	}
	ts.Clock.Advance(-2 * time.Second)
}

// TestDeviceNeedsSignIn: the page sends a browser without a session to
// sign in and back to the code.
func TestDeviceNeedsSignIn(t *testing.T) {
	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, nil)
	b := newBrowser(t, ts.Issuer)
	p := b.login(b.get(d.Complete), "alice", alicePassword)
	if p.Request.URL.Path != "/device" || p.Request.URL.Query().Get("user_code") != d.UserCode || !strings.Contains(p.Body, `value="allow"`) {
		t.Fatalf("after signing in: %s %d %s", p.Request.URL, p.StatusCode, p.Body)
	}
	// A form without its CSRF token is refused.
	form := formValues(p)
	form.Del("csrf_token")
	form.Set("decision", "allow")
	if p := b.post(ts.Issuer+"/device", form); p.StatusCode != http.StatusForbidden {
		t.Fatalf("Allow without a CSRF token: %d %s", p.StatusCode, p.Body)
	}
	wantPollError(t, ts, d.DeviceCode, "authorization_pending")
}

// TestDeviceBadRequests: each request that cannot succeed says why.
func TestDeviceBadRequests(t *testing.T) {
	ts := newTestServer(t, withDevice)
	endpoint := ts.Issuer + "/oauth2/device_authorization"
	for _, tc := range []struct {
		name             string
		form             url.Values
		user, pass       string
		status           int
		err, description string
	}{
		{"fail/unknown-client", url.Values{"client_id": {"nobody"}}, "", "", 401, "invalid_client", `no client with id 'nobody'`},
		{"fail/client-without-the-grant", url.Values{"scope": {"openid"}}, webClient, webSecret, 400, "unauthorized_client", "may not use the device authorization grant"},
		{"fail/wrong-secret", url.Values{"scope": {"openid"}}, webClient, "wrong", 401, "invalid_client", ""},
		{"fail/no-client", url.Values{"scope": {"openid"}}, "", "", 400, "invalid_request", ""},
		{"fail/empty-body", url.Values{}, "", "", 400, "invalid_request", "POST body"},
		{"fail/scope", url.Values{"client_id": {cliClient}, "scope": {"openid admin"}}, "", "", 400, "invalid_scope", `'admin'`},
		{"fail/max-age", url.Values{"client_id": {cliClient}, "max_age": {"-1"}}, "", "", 400, "invalid_request", "max_age"},
		{"fail/amr", url.Values{"client_id": {cliClient}, "amr": {"retina"}}, "", "", 400, "unmet_authentication_requirements", `'retina'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postForm(t, endpoint, tc.form, tc.user, tc.pass)
			desc, _ := body["error_description"].(string)
			if status != tc.status || body["error"] != tc.err || !strings.Contains(desc, tc.description) {
				t.Fatalf("%d %v, want %d %s (%q)", status, body, tc.status, tc.err, tc.description)
			}
		})
	}

	d := startDevice(t, ts, nil)
	token := ts.Issuer + "/oauth2/token"
	for _, tc := range []struct {
		name       string
		form       url.Values
		user, pass string
		err        string
	}{
		{"fail/no-device-code", url.Values{"grant_type": {deviceGrant}, "client_id": {cliClient}}, "", "", "invalid_request"},
		{"fail/malformed-device-code", url.Values{"grant_type": {deviceGrant}, "client_id": {cliClient}, "device_code": {"1234"}}, "", "", "invalid_grant"},
		{"fail/unknown-device-code", url.Values{"grant_type": {deviceGrant}, "client_id": {cliClient},
			"device_code": {"stpd_" + strings.Repeat("A", 43)}}, "", "", "invalid_grant"},
		{"fail/client-without-the-grant", url.Values{"grant_type": {deviceGrant}, "device_code": {d.DeviceCode}}, webClient, webSecret, "unauthorized_client"},
	} {
		t.Run("token/"+tc.name, func(t *testing.T) {
			status, body := postForm(t, token, tc.form, tc.user, tc.pass)
			if status != http.StatusBadRequest || body["error"] != tc.err {
				t.Fatalf("%d %v, want 400 %s", status, body, tc.err)
			}
		})
	}
	// The device code is still pending after all that.
	wantPollError(t, ts, d.DeviceCode, "authorization_pending")
}

// TestDevicePageInChromium: a person opens /device in a real browser,
// signs in, types the code their terminal shows (in lower case, without
// the dash) and allows it; the device's next poll gets tokens. Both states
// of the page pass the accessibility, landmark and contrast checks.
func TestDevicePageInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, nil)
	b := newChrome(t, ctx, chromium, ts.Issuer)
	b.open(ts.Issuer+"/device", "/login", "the device page, signed out")
	b.fill("Username", "alice")
	b.fill("Password", alicePassword)
	b.press("button", "Sign in", "/device", http.StatusOK)
	b.checkAccessible("the code entry", []string{"user_code"})
	b.checkLandmarks("the code entry", false)
	b.checkContrast("the code entry")
	b.checkReports("the code entry")

	b.fill("Code", strings.ToLower(strings.ReplaceAll(d.UserCode, "-", "")))
	b.press("button", "Continue", "/device", http.StatusOK)
	if got := b.text("the code shown", chromedp.CSS("#user-code")); got != d.UserCode {
		t.Errorf("the confirmation shows the code %q, want %q", got, d.UserCode)
	}
	if lead := b.text("the request", chromedp.CSS(".lead")); !strings.Contains(lead, "Stepup CLI asks to sign in as alice") {
		t.Errorf("the confirmation says %q", lead)
	}
	if !b.has("button", "Allow") || !b.has("button", "Deny") {
		t.Fatal("the confirmation has no Allow and Deny buttons")
	}
	b.checkAccessible("the confirmation", nil)
	b.checkLandmarks("the confirmation", false)
	b.checkContrast("the confirmation")
	b.checkReports("the confirmation")
	b.screenshot("stepup-device.png")
	wantPollError(t, ts, d.DeviceCode, "authorization_pending")

	b.press("button", "Allow", "/device", http.StatusOK)
	if msg := b.text("after Allow", chromedp.CSS("main p")); !strings.Contains(msg, "You can return to your terminal.") {
		t.Fatalf("after Allow the page says %q", msg)
	}
	b.checkReports("after Allow")
	ts.Clock.Advance(6 * time.Second)
	if status, body := poll(t, ts, d.DeviceCode); status != http.StatusOK || body["access_token"] == nil {
		t.Fatalf("poll after Allow: %d %v", status, body)
	}
}

// TestDeviceStepUpInChromium: a device login for an organization that
// requires MFA, in Chromium, by someone without it: signed in with the
// password on the page the URL with the code leads to, the person is told
// why and sets MFA up, comes back to the device page, allows, and the
// device's tokens say mfa.
func TestDeviceStepUpInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	ts := newTestServer(t, withDevice)
	d := startDevice(t, ts, url.Values{"acr_values": {"urn:stepup:org:secure"}})
	b := newChrome(t, ctx, chromium, ts.Issuer)
	b.open(d.Complete, "/login", "the URL with the code, signed out")
	b.fill("Username", "alice")
	b.fill("Password", alicePassword)
	b.press("button", "Sign in", "/account/security", http.StatusOK)
	if lead := b.text("the setup page", chromedp.CSS("main")); !strings.Contains(lead, "Secure requires multi-factor authentication to continue to Stepup CLI") {
		t.Errorf("the setup page does not say why: %q", lead)
	}
	b.press("button", "Set up application", "/account/security", http.StatusOK)
	secret := b.text("reading the secret", chromedp.CSS("#totp-secret"))
	b.fill("Code from the app", code(t, secret, ts.Clock.Now()))
	b.press("button", "Verify & save", "/account/security/verify", http.StatusOK)
	b.press("link", "I have saved them → Continue", "/device", http.StatusOK)
	if got := b.text("the code shown", chromedp.CSS("#user-code")); got != d.UserCode {
		t.Errorf("the confirmation shows the code %q, want %q", got, d.UserCode)
	}
	b.checkAccessible("the confirmation after the step-up", nil)
	b.press("button", "Allow", "/device", http.StatusOK)
	ts.Clock.Advance(6 * time.Second)
	defer ts.Clock.Advance(-6 * time.Second)
	status, body := poll(t, ts, d.DeviceCode)
	if status != http.StatusOK {
		t.Fatalf("poll after Allow: %d %v", status, body)
	}
	if _, c := jwtParts(t, body["access_token"].(string)); !slices.Contains(toStrings(c["amr"]), "mfa") {
		t.Fatalf("amr after the step-up on the page: %v", c["amr"])
	}
}

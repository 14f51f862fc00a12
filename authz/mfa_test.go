package authz_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

var (
	secretOnPage   = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)
	recoveryOnPage = regexp.MustCompile(`<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>`)
)

// enroll turns MFA on for the browser's person through the account page and
// returns the TOTP secret and the recovery codes.
func enroll(t *testing.T, ts *testServer, b *browser) (string, []string) {
	t.Helper()
	p := b.get(ts.Issuer + "/account/security")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Set up application") {
		t.Fatalf("account page: %d %s", p.StatusCode, p.Body)
	}
	p = b.post(ts.Issuer+"/account/security/setup", formValues(p))
	m := secretOnPage.FindStringSubmatch(p.Body)
	if m == nil || !strings.Contains(p.Body, "<img src=\"data:image/png;base64,") || !strings.Contains(p.Body, "alt=\"QR code") {
		t.Fatalf("setup page without QR code and secret: %s", p.Body)
	}
	secret := m[1]
	form := formValues(p)
	form.Set("code", code(t, secret, ts.Clock.Now()))
	p = b.post(ts.Issuer+"/account/security/verify", form)
	codes := recoveryOnPage.FindAllStringSubmatch(p.Body, -1)
	if p.StatusCode != 200 || len(codes) != 10 || !strings.Contains(p.Body, "Multi-factor authentication is on") {
		t.Fatalf("after Verify & save: %d %s", p.StatusCode, p.Body)
	}
	var out []string
	for _, c := range codes {
		out = append(out, c[1])
	}
	return secret, out
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// passwordThenOTP starts a CLI authorization in a new browser, logs in with
// the password, and returns the second-factor page.
func passwordThenOTP(t *testing.T, ts *testServer) (*browser, page, string) {
	t.Helper()
	b := newBrowser(t, ts.Issuer)
	verifier := oauth2.GenerateVerifier()
	cfg := cliConfig(ts.Issuer, "53682")
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
	p = b.login(p, "alice", alicePassword)
	if p.Request.URL.Path != "/login/otp" || !strings.Contains(p.Body, `name="code"`) {
		t.Fatalf("after the password, want the code page, got %d at %s (Location %q)", p.StatusCode, p.Request.URL, p.Header.Get("Location"))
	}
	return b, p, verifier
}

func submitCode(b *browser, p page, c string) page {
	form := formValues(p)
	form.Set("code", c)
	return b.post(b.issuer+"/login/otp", form)
}

func tokensFrom(t *testing.T, ts *testServer, p page, verifier string) *oauth2.Token {
	t.Helper()
	back := redirectOf(t, p)
	tok, err := cliConfig(ts.Issuer, "53682").Exchange(bg, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func amrOf(t *testing.T, tok *oauth2.Token) []string {
	_, c := jwtParts(t, tok.AccessToken)
	return strs(c["amr"])
}

func TestMFAEnrollAndLogin(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	tok, _ := exchange(t, ts, b)
	if got := amrOf(t, tok); !slices.Equal(got, []string{"pwd"}) {
		t.Fatalf("before MFA, amr = %v", got)
	}
	secret, recovery := enroll(t, ts, b)

	// The API says so.
	req, _ := http.NewRequest(http.MethodGet, ts.Issuer+"/api/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var me map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&me)
	resp.Body.Close()
	if me["mfa_enabled"] != true || me["username"] != "alice" {
		t.Fatalf("/api/me = %v", me)
	}

	// A new login asks for the password, then the code; nothing before.
	b2, p, verifier := passwordThenOTP(t, ts)
	if r := submitCode(b2, p, "000000"); r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, "That code is not right") {
		t.Fatalf("wrong code: %d", r.StatusCode)
	}
	if r := submitCode(b2, p, "12ab"); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed code: %d", r.StatusCode)
	}
	// The enrollment used the current step; the next one is within the
	// accepted skew. (Moving the server clock ahead instead would put
	// auth_time in fosite's future: it checks against the wall clock.)
	now := code(t, secret, ts.Clock.Now().Add(30*time.Second))
	tok = tokensFrom(t, ts, submitCode(b2, p, now), verifier)
	if got := amrOf(t, tok); !slices.Equal(got, []string{"otp", "pwd", "mfa"}) {
		t.Fatalf("after password and code, amr = %v", got)
	}
	raw := tok.Extra("id_token").(string)
	if _, c := jwtParts(t, raw); c["acr"] != "urn:stepup:acr:mfa" || !slices.Contains(strs(c["amr"]), "mfa") {
		t.Fatalf("ID token claims = %v", c)
	}

	// The same code cannot be used again, in any browser.
	b3, p3, v3 := passwordThenOTP(t, ts)
	if r := submitCode(b3, p3, now); r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, "already used") {
		t.Fatalf("replayed code: %d %s", r.StatusCode, r.Body)
	}
	// A recovery code works once.
	tok = tokensFrom(t, ts, submitCode(b3, p3, strings.ToUpper(recovery[3])), v3)
	if got := amrOf(t, tok); !slices.Contains(got, "mfa") {
		t.Fatalf("recovery login amr = %v", got)
	}
	b4, p4, _ := passwordThenOTP(t, ts)
	if r := submitCode(b4, p4, recovery[3]); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("reused recovery code: %d", r.StatusCode)
	}
}

func TestMFAThrottle(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b)
	secret, _ := enroll(t, ts, b)
	b2, p, _ := passwordThenOTP(t, ts)
	for i := range 5 {
		if r := submitCode(b2, p, "000000"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong code %d: %d", i+1, r.StatusCode)
		}
	}
	// The sixth attempt is allowed but starts the wait; the next must wait.
	submitCode(b2, p, "000000")
	next := code(t, secret, ts.Clock.Now().Add(30*time.Second))
	r := submitCode(b2, p, next)
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(r.Body, "Try again in") {
		t.Fatalf("during the wait, the right code: %d %s", r.StatusCode, r.Body)
	}
	ts.Clock.Advance(31 * time.Second)
	r = submitCode(b2, p, next)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the wait, the right code: %d %s", r.StatusCode, r.Body)
	}
}

// TestAuthorizeDemandingMFAEnrollsFirst: a request with amr=mfa from a
// person without an authenticator takes them through setup, then back.
func TestAuthorizeDemandingMFAEnrollsFirst(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b) // a password session
	cfg := cliConfig(ts.Issuer, "53682")
	verifier := oauth2.GenerateVerifier()
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("amr", "mfa")))
	if p.Request.URL.Path != "/account/security" || !strings.Contains(p.Body, "Set up application") {
		t.Fatalf("amr=mfa without an authenticator: %d at %s", p.StatusCode, p.Request.URL)
	}
	p = b.post(ts.Issuer+"/account/security/setup", formValues(p))
	secret := secretOnPage.FindStringSubmatch(p.Body)[1]
	form := formValues(p)
	form.Set("code", code(t, secret, ts.Clock.Now()))
	p = b.post(ts.Issuer+"/account/security/verify", form)
	cont := regexp.MustCompile(`href="(/oauth2/authorize\?resume=[^"]+)"`).FindStringSubmatch(p.Body)
	if cont == nil {
		t.Fatalf("no Continue link after setup: %s", p.Body)
	}
	tok := tokensFrom(t, ts, b.get(ts.Issuer+htmlUnescape(cont[1])), verifier)
	if got := amrOf(t, tok); !slices.Equal(got, []string{"otp", "pwd", "mfa"}) {
		t.Fatalf("amr = %v", got)
	}
	// With a session that already has both factors, amr=mfa needs nothing more.
	p = b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("amr", "mfa")))
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatal("amr=mfa with an mfa session asked for more")
	}
}

// TestTOTPCodeOnceAcrossReplicas: two servers on one store; a code
// accepted by one is refused by the other.
func TestTOTPCodeOnceAcrossReplicas(t *testing.T) {
	clk := &clock{}
	shared := memory.New(memory.Config{Now: clk.Now})
	share := func(c *authz.Config) { c.Store, c.Now = shared, clk.Now }
	a := newTestServer(t, share)
	a.Clock = clk
	bsrv := newTestServer(t, share)
	bsrv.Clock = clk
	ba := newBrowser(t, a.Issuer)
	exchange(t, a, ba)
	secret, _ := enroll(t, a, ba)
	c := code(t, secret, clk.Now().Add(30*time.Second))
	b1, p1, _ := passwordThenOTP(t, a)
	b2, p2, _ := passwordThenOTP(t, bsrv)
	if r := submitCode(b1, p1, c); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("on A: %d", r.StatusCode)
	}
	if r := submitCode(b2, p2, c); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the same code on B: %d, want 401", r.StatusCode)
	}
}

func TestMFADisableNeedsCode(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b)
	secret, _ := enroll(t, ts, b)
	p := b.get(ts.Issuer + "/account/security")
	form := formValues(p)
	form.Set("code", "000000")
	if r := b.post(ts.Issuer+"/account/security/disable", form); r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, "is on") {
		t.Fatalf("disable with a wrong code: %d", r.StatusCode)
	}
	form.Set("code", code(t, secret, ts.Clock.Now().Add(30*time.Second)))
	if r := b.post(ts.Issuer+"/account/security/disable", form); r.StatusCode != 200 || !strings.Contains(r.Body, "Multi-factor authentication is off") {
		t.Fatalf("disable with the right code: %d %s", r.StatusCode, r.Body)
	}
	// Password alone is enough again.
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	if got := amrOf(t, tok); !slices.Equal(got, []string{"pwd"}) {
		t.Fatalf("after disabling, amr = %v", got)
	}
}

// TestOrganizationContextAtLogin: acr_values naming an organization applies
// its policy to the login, for its members only.
func TestOrganizationContextAtLogin(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		c.Orgs = append(c.Orgs, authz.Org{ID: "secure", Name: "Secure", MFARequired: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "member"}}})
	})
	cfg := cliConfig(ts.Issuer, "53682")
	ch := oauth2.S256ChallengeOption(oauth2.GenerateVerifier())
	org := func(id string) oauth2.AuthCodeOption {
		return oauth2.SetAuthURLParam("acr_values", "urn:stepup:org:"+id)
	}

	// alice, a member of an organization requiring MFA, is taken to set it up.
	b := newBrowser(t, ts.Issuer)
	p := b.login(b.get(cfg.AuthCodeURL("state-0123456789", ch, org("secure"))), "alice", alicePassword)
	if p.Request.URL.Path != "/account/security" {
		t.Fatalf("member of an MFA organization: ended at %s", p.Request.URL)
	}
	// The setup page says why, naming the organization and the client.
	const why = "Secure requires multi-factor authentication to continue to Stepup CLI."
	if !strings.Contains(p.Body, why) {
		t.Errorf("the setup page does not say %q: %s", why, p.Body)
	}
	// An organization requiring SSO, which this server cannot do yet: a
	// clear error, never a token without it.
	p = b.get(cfg.AuthCodeURL("state-0123456789", ch, org("acme")))
	if u := redirectOf(t, p); u.Query().Get("error") != "unmet_authentication_requirements" {
		t.Fatalf("member of an SSO organization: %s", u)
	}
	// bob belongs to neither: the organization is ignored.
	b2 := newBrowser(t, ts.Issuer)
	p = b2.login(b2.get(cfg.AuthCodeURL("state-0123456789", ch, org("secure"))), "bob", alicePassword)
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatalf("non-member: %s", p.Header.Get("Location"))
	}
}

// TestStepUpAsksForTheCodeAlone is the loop resource servers rely on: a
// token from a password login is refused by an organization that requires
// MFA; the authorization with amr=mfa asks the same browser for the code
// only, never the password again; the new token passes.
func TestStepUpAsksForTheCodeAlone(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		c.Orgs = append(c.Orgs, authz.Org{ID: "secure", Name: "Secure", MFARequired: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "member"}}})
	})
	// The console's browser logs in with the password...
	console, tok := loginAs(t, ts, "alice")
	// ...while alice turns on MFA from another device.
	phone, _ := loginAs(t, ts, "alice")
	secret, _ := enroll(t, ts, phone)

	status, h, body := call(t, "GET", ts.Issuer+"/api/orgs/secure", tok.AccessToken, nil)
	if status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), `amr="mfa"`) || !slices.Equal(strs(body["amr"]), []string{"mfa"}) {
		t.Fatalf("password token: %d %v", status, body)
	}
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	p := console.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", strings.Join(strs(body["amr"]), " "))))
	if p.Request.URL.Path != "/login/otp" || strings.Contains(p.Body, `name="password"`) {
		t.Fatalf("step-up asked for more than the code: %d at %s", p.StatusCode, p.Request.URL)
	}
	if !strings.Contains(p.Body, "Stepup CLI asks for multi-factor authentication.") {
		t.Errorf("the code page does not say who asks: %s", p.Body)
	}
	// With the organization named, the page names it.
	named := console.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "mfa"),
		oauth2.SetAuthURLParam("acr_values", "urn:stepup:org:secure")))
	if !strings.Contains(named.Body, "Secure requires multi-factor authentication to continue to Stepup CLI.") {
		t.Errorf("the code page does not name the organization: %s", named.Body)
	}
	stepped := tokensFrom(t, ts, submitCode(console, p, code(t, secret, ts.Clock.Now().Add(30*time.Second))), v)
	if status, _, body := call(t, "GET", ts.Issuer+"/api/orgs/secure", stepped.AccessToken, nil); status != 200 || body["id"] != "secure" {
		t.Fatalf("after step-up: %d %v", status, body)
	}
	if _, c := jwtParts(t, stepped.AccessToken); !slices.Contains(strs(c["amr"]), "mfa") || c["jti"] == "" {
		t.Fatalf("stepped-up token claims %v", c)
	}
}

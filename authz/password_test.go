package authz_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestChangePassword: with the current password, a person sets a new one;
// this browser stays signed in, every other session and refresh family of
// theirs ends, the old password no longer works and the new one does.
func TestChangePassword(t *testing.T) {
	ts := newTestServer(t, withTeam)
	laptop, _ := loginAs(t, ts, "dave")
	phone, phoneTok := loginAs(t, ts, "dave")
	ts.Clock.Advance(1100 * time.Millisecond) // the change in a second of its own

	p := laptop.get(ts.Issuer + "/account/password")
	form := formValues(p)
	change := func(current, pw, again string) page {
		f := url.Values{"csrf_token": {form.Get("csrf_token")}, "current_password": {current}, "new_password": {pw}, "new_password_again": {again}}
		return laptop.post(ts.Issuer+"/account/password", f)
	}
	if r := change("wrong", "dave's new password", "dave's new password"); r.StatusCode != 401 {
		t.Fatalf("with a wrong current password: %d", r.StatusCode)
	}
	if r := change(alicePassword, "short", "short"); r.StatusCode != 400 {
		t.Fatalf("a short password: %d", r.StatusCode)
	}
	if r := change(alicePassword, "dave's new password", "dave's new password"); r.StatusCode != 200 || !strings.Contains(r.Body, "other sessions are signed out") {
		t.Fatalf("changing: %d %s", r.StatusCode, r.Body)
	}
	// The phone's session, refresh token and access token are over.
	if status, body := refresh(t, ts, phoneTok.RefreshToken); status != 400 || !strings.Contains(body["error_description"].(string), "password was changed") {
		t.Errorf("the phone's refresh token: %d %v", status, body)
	}
	if status, _, body := call(t, "GET", ts.Issuer+"/api/me", phoneTok.AccessToken, nil); status != 401 {
		t.Errorf("the phone's access token: %d %v", status, body)
	}
	cfg := cliConfig(ts.Issuer, "53682")
	if p := phone.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))); !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Errorf("the phone's browser session: %d at %s", p.StatusCode, p.Request.URL)
	}
	// The laptop stays signed in.
	if p := laptop.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))); redirectOf(t, p).Query().Get("code") == "" {
		t.Errorf("the laptop was signed out")
	}
	// Old password out, new one in.
	b := newBrowser(t, ts.Issuer)
	if r := b.login(loginPage(t, ts, b), "dave", alicePassword); r.StatusCode != 401 {
		t.Errorf("the old password: %d", r.StatusCode)
	}
	if r := b.login(loginPage(t, ts, b), "dave", "dave's new password"); r.StatusCode != 303 {
		t.Errorf("the new password: %d", r.StatusCode)
	}
}

var resetLink = regexp.MustCompile(`https?://\S+/password/reset/stpp_[A-Za-z0-9_-]{43}`)

// TestForgotPassword: the link arrives by email, works once, for an hour;
// the form tells nobody whether an address has an account; it is throttled.
func TestForgotPassword(t *testing.T) {
	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, withMail(sink))
	_, daveTok := loginAs(t, ts, "dave")
	ts.Clock.Advance(1100 * time.Millisecond)
	b := newBrowser(t, ts.Issuer)
	ask := func(addr string) page {
		p := b.get(ts.Issuer + "/password/forgot")
		return b.post(ts.Issuer+"/password/forgot", url.Values{"csrf_token": {formValues(p).Get("csrf_token")}, "email": {addr}})
	}
	known, unknown := ask("dave@example.com"), ask("nobody@example.com")
	if known.StatusCode != 200 || unknown.StatusCode != 200 ||
		strings.ReplaceAll(known.Body, "dave@example.com", "X") != strings.ReplaceAll(unknown.Body, "nobody@example.com", "X") {
		t.Fatalf("the answers tell the addresses apart:\n%s\n%s", known.Body, unknown.Body)
	}
	mails := sink.Wait(1, 10*time.Second)
	if len(mails) != 1 || mails[0].To[0] != "dave@example.com" {
		t.Fatalf("mails: %v", mails)
	}
	link := mailLink(t, sink, 1, resetLink)
	p := b.get(link)
	set := func(pw, again string) page {
		return b.post(link, url.Values{"csrf_token": {formValues(p).Get("csrf_token")}, "new_password": {pw}, "new_password_again": {again}})
	}
	if r := set("short", "short"); r.StatusCode != 400 {
		t.Fatalf("a short password: %d", r.StatusCode)
	}
	if r := set("dave reset this one", "dave reset this one"); r.StatusCode != 200 || !strings.Contains(r.Body, "new password is set") {
		t.Fatalf("setting the password: %d %s", r.StatusCode, r.Body)
	}
	if r := b.get(link); r.StatusCode != 404 {
		t.Errorf("the used link: %d", r.StatusCode)
	}
	if status, _, _ := call(t, "GET", ts.Issuer+"/api/me", daveTok.AccessToken, nil); status != 401 {
		t.Errorf("dave's token from before the reset: %d", status)
	}
	nb := newBrowser(t, ts.Issuer)
	if r := nb.login(loginPage(t, ts, nb), "dave", "dave reset this one"); r.StatusCode != 303 {
		t.Errorf("the reset password: %d", r.StatusCode)
	}
	// Throttled per address: the third ask above the limit is refused.
	ask("dave@example.com")
	if r := ask("dave@example.com"); r.StatusCode != 429 || !strings.Contains(r.Body, "1 hour") {
		t.Errorf("asking again and again: %d", r.StatusCode)
	}
	// A link expires after an hour.
	ts.Clock.Advance(2 * time.Hour)
	next := len(sink.Messages()) + 1
	b2 := newBrowser(t, ts.Issuer).from("192.0.2.9")
	p2 := b2.get(ts.Issuer + "/password/forgot")
	b2.post(ts.Issuer+"/password/forgot", url.Values{"csrf_token": {formValues(p2).Get("csrf_token")}, "email": {"carol@example.com"}})
	late := mailLink(t, sink, next, resetLink)
	ts.Clock.Advance(61 * time.Minute)
	if r := b2.get(late); r.StatusCode != 404 {
		t.Errorf("a link after 61 minutes: %d", r.StatusCode)
	}
}

// TestChangePasswordByAPI: the API takes the current password too, and
// ends every login, the caller's included.
func TestChangePasswordByAPI(t *testing.T) {
	ts := newTestServer(t, withTeam)
	_, tok := loginAs(t, ts, "dave")
	ts.Clock.Advance(1100 * time.Millisecond)
	u := ts.Issuer + "/api/me/password"
	if status, _, _ := call(t, "POST", u, tok.AccessToken, map[string]any{"current_password": "wrong", "new_password": "long enough new one"}); status != 403 {
		t.Fatalf("a wrong current password: %d", status)
	}
	if status, _, _ := call(t, "POST", u, tok.AccessToken, map[string]any{"current_password": alicePassword, "new_password": "short"}); status != 400 {
		t.Fatalf("a short new password: %d", status)
	}
	if status, _ := callStatus(t, "POST", u, tok.AccessToken, map[string]any{"current_password": alicePassword, "new_password": "long enough new one"}); status != 204 {
		t.Fatalf("changing: %d", status)
	}
	if status, _, _ := call(t, "GET", ts.Issuer+"/api/me", tok.AccessToken, nil); status != 401 {
		t.Fatalf("the caller's token after the change: %d", status)
	}
}

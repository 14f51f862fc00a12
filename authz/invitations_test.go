package authz_test

import (
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/mfa"
)

var inviteLink = regexp.MustCompile(`https?://\S+/invite/stpi_[A-Za-z0-9_-]{43}`)

// linkIn returns the invitation link of the n-th mail (from 1) the sink has.
func linkIn(t *testing.T, sink *testenv.SMTPSink, n int) string {
	t.Helper()
	return mailLink(t, sink, n, inviteLink)
}

// mailLink returns the link that re finds in the text of the n-th mail
// (from 1) the sink has, waiting for it to arrive.
func mailLink(t *testing.T, sink *testenv.SMTPSink, n int, re *regexp.Regexp) string {
	t.Helper()
	mails := sink.Wait(n, 10*time.Second)
	if len(mails) < n {
		t.Fatalf("%d mails arrived, want %d", len(mails), n)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(mails[n-1].Data)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(m.Body))
	link := re.FindString(string(body))
	if link == "" {
		t.Fatalf("no link in %s", body)
	}
	return link
}

func withMail(sink *testenv.SMTPSink) func(*authz.Config) {
	return func(c *authz.Config) {
		withTeam(c)
		c.Mailer = mfa.SMTP{Addr: sink.Addr, RootCAs: sink.RootCAs()}
		c.MailFrom = "Stepup <no-reply@example.com>"
	}
}

// TestInvitationStory: an owner invites a new person by email; the person
// opens the link from the mail, chooses a username and password, can then
// log in, and is in the members list without MFA.
func TestInvitationStory(t *testing.T) {
	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, withMail(sink))
	_, alice := loginAs(t, ts, "alice")
	status, _, inv := call(t, "POST", ts.Issuer+"/api/orgs/team/invitations", alice.AccessToken, map[string]any{"email": "erin@example.com", "role": "admin"})
	if status != 201 || inv["email"] != "erin@example.com" || inv["role"] != "admin" || inv["id"] == nil {
		t.Fatalf("invite: %d %v", status, inv)
	}
	mails := sink.Wait(1, 10*time.Second)
	if len(mails) != 1 || mails[0].To[0] != "erin@example.com" || !strings.Contains(string(mails[0].Data), "alice invites you to join Team") {
		t.Fatalf("the invitation mail: %v", mails)
	}
	link := linkIn(t, sink, 1)
	if _, _, list := call(t, "GET", ts.Issuer+"/api/orgs/team/invitations", alice.AccessToken, nil); len(list["invitations"].([]any)) != 1 {
		t.Fatalf("open invitations: %v", list)
	}

	erin := newBrowser(t, ts.Issuer)
	p := erin.get(link)
	if p.StatusCode != 200 || !strings.Contains(p.Body, "join <strong>Team</strong> as an admin") {
		t.Fatalf("the invitation page: %d %s", p.StatusCode, p.Body)
	}
	form := formValues(p)
	submit := func(username, password, again string) page {
		f := url.Values{"csrf_token": {form.Get("csrf_token")}, "action": {"create"},
			"username": {username}, "password": {password}, "password_again": {again}}
		return erin.post(link, f)
	}
	for _, bad := range []struct{ user, pw, again, says string }{
		{"Erin!", "long enough password", "long enough password", "Choose a username"},
		{"erin", "short", "short", "at least 10"},
		{"erin", "long enough password", "another password!", "differ"},
		{"alice", "long enough password", "long enough password", "taken"},
	} {
		if r := submit(bad.user, bad.pw, bad.again); r.StatusCode < 400 || !strings.Contains(r.Body, bad.says) {
			t.Fatalf("accepting with %v: %d %s", bad, r.StatusCode, r.Body)
		}
	}
	if r := submit("erin", "erin's long password", "erin's long password"); r.StatusCode != 200 || !strings.Contains(r.Body, "You are now an admin of Team") {
		t.Fatalf("accepting: %d %s", r.StatusCode, r.Body)
	}
	// The link worked once.
	if r := newBrowser(t, ts.Issuer).get(link); r.StatusCode != 404 {
		t.Fatalf("the used link again: %d", r.StatusCode)
	}
	// erin logs in like anyone, and is an admin of team without MFA.
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	b := newBrowser(t, ts.Issuer)
	back := redirectOf(t, b.login(b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), "erin", "erin's long password"))
	tok, err := cfg.Exchange(bg, back.Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, me := call(t, "GET", ts.Issuer+"/api/me", tok.AccessToken, nil); me["email"] != "erin@example.com" || len(me["orgs"].([]any)) != 1 {
		t.Fatalf("erin's /api/me: %v", me)
	}
	_, _, list := call(t, "GET", ts.Issuer+"/api/orgs/team/members", alice.AccessToken, nil)
	found := false
	for _, m := range list["members"].([]any) {
		m := m.(map[string]any)
		if m["username"] == "erin" {
			found = m["role"] == "admin" && m["mfa_enabled"] == false
		}
	}
	if !found {
		t.Fatalf("erin is not an admin without MFA in %v", list)
	}
	if _, _, open := call(t, "GET", ts.Issuer+"/api/orgs/team/invitations", alice.AccessToken, nil); len(open["invitations"].([]any)) != 0 {
		t.Errorf("the accepted invitation is still open: %v", open)
	}
}

// TestInvitationLifecycle: resend replaces the link, revoke and expiry end
// it, an existing account of the invited address joins with a click, and
// the role rules apply to invitations.
func TestInvitationLifecycle(t *testing.T) {
	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, withMail(sink))
	_, alice := loginAs(t, ts, "alice")
	_, carol := loginAs(t, ts, "carol") // an admin
	_, dave := loginAs(t, ts, "dave")   // a member
	invite := func(token, email, role string) (int, map[string]any) {
		status, _, body := call(t, "POST", ts.Issuer+"/api/orgs/team/invitations", token, map[string]any{"email": email, "role": role})
		return status, body
	}
	for _, tc := range []struct {
		name, token, email, role string
		status                   int
	}{
		{"fail/admin-invites-owner", carol.AccessToken, "x@example.com", "owner", 403},
		{"fail/member-invites", dave.AccessToken, "x@example.com", "member", 403},
		{"fail/bad-email", alice.AccessToken, "not an email", "member", 400},
		{"fail/name-and-address", alice.AccessToken, "X <x@example.com>", "member", 400},
		{"fail/no-such-role", alice.AccessToken, "x@example.com", "boss", 400},
	} {
		if status, body := invite(tc.token, tc.email, tc.role); status != tc.status {
			t.Errorf("%s: %d %v, want %d", tc.name, status, body, tc.status)
		}
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d mails sent for refused invitations", n)
	}

	// Resend: the first link stops working, the second works.
	status, inv := invite(carol.AccessToken, "bob@example.com", "member")
	if status != 201 {
		t.Fatalf("invite bob: %d %v", status, inv)
	}
	first := linkIn(t, sink, 1)
	if status, _, body := call(t, "POST", ts.Issuer+"/api/orgs/team/invitations/"+inv["id"].(string)+"/resend", carol.AccessToken, nil); status != 200 {
		t.Fatalf("resend: %d %v", status, body)
	}
	second := linkIn(t, sink, 2)
	if first == second {
		t.Fatal("the resent link is the old one")
	}
	if r := newBrowser(t, ts.Issuer).get(first); r.StatusCode != 404 {
		t.Fatalf("the replaced link: %d", r.StatusCode)
	}
	// bob has an account of that address: signed in, he joins with a click.
	bobBrowser, _ := loginAs(t, ts, "bob")
	p := bobBrowser.get(second)
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Join Team as bob") {
		t.Fatalf("the invitation page signed in as bob: %d %s", p.StatusCode, p.Body)
	}
	f := formValues(p)
	if r := bobBrowser.post(second, url.Values{"csrf_token": {f.Get("csrf_token")}, "action": {"join"}}); r.StatusCode != 200 || !strings.Contains(r.Body, "You are now a member of Team") {
		t.Fatalf("bob joining: %d %s", r.StatusCode, r.Body)
	}
	// Signed in as someone else, one cannot join with that account.
	status, inv = invite(alice.AccessToken, "frank@example.com", "member")
	if status != 201 {
		t.Fatal(inv)
	}
	link := linkIn(t, sink, 3)
	daveBrowser, _ := loginAs(t, ts, "dave")
	p = daveBrowser.get(link)
	f = formValues(p)
	if r := daveBrowser.post(link, url.Values{"csrf_token": {f.Get("csrf_token")}, "action": {"join"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("dave joining with frank's invitation: %d", r.StatusCode)
	}
	// Revoked, the link is dead.
	if status, _ := callStatus(t, "DELETE", ts.Issuer+"/api/orgs/team/invitations/"+inv["id"].(string), alice.AccessToken, nil); status != 204 {
		t.Fatalf("revoke: %d", status)
	}
	if r := newBrowser(t, ts.Issuer).get(link); r.StatusCode != 404 {
		t.Fatalf("a revoked link: %d", r.StatusCode)
	}
	// Expired after a week.
	if status, _ := invite(alice.AccessToken, "gina@example.com", "member"); status != 201 {
		t.Fatal(status)
	}
	link = linkIn(t, sink, 4)
	ts.Clock.Advance(8 * 24 * time.Hour)
	if r := newBrowser(t, ts.Issuer).get(link); r.StatusCode != 404 || !strings.Contains(r.Body, "expired") {
		t.Fatalf("a link after 8 days: %d %s", r.StatusCode, r.Body)
	}
}

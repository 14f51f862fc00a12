package authz_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/testenv"
)

var verifyLink = regexp.MustCompile(`https?://\S+/email/verify/stpe_[A-Za-z0-9_-]{43}`)

// TestChangeEmail: the address changes only when the link sent to the new
// one is opened and confirmed, once; the old address is told; taken
// addresses are refused.
func TestChangeEmail(t *testing.T) {
	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, withMail(sink))
	b, tok := loginAs(t, ts, "dave")
	u := ts.Issuer + "/api/me/email"
	for _, bad := range []string{"not an address", "carol@example.com", "dave@example.com"} {
		if status, _, body := call(t, "POST", u, tok.AccessToken, map[string]any{"email": bad}); status != 400 {
			t.Errorf("changing to %q: %d %v", bad, status, body)
		}
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d mails for refused changes", n)
	}
	status, _, body := call(t, "POST", u, tok.AccessToken, map[string]any{"email": "dave@new.example"})
	if status != 202 || body["pending"] != "dave@new.example" {
		t.Fatalf("changing: %d %v", status, body)
	}
	// Not changed until the link is used.
	if _, _, me := call(t, "GET", ts.Issuer+"/api/me", tok.AccessToken, nil); me["email"] != "dave@example.com" {
		t.Fatalf("the address changed before the link was opened: %v", me)
	}
	mails := sink.Wait(1, 10*time.Second)
	if len(mails) != 1 || mails[0].To[0] != "dave@new.example" {
		t.Fatalf("mails: %v", mails)
	}
	link := mailLink(t, sink, 1, verifyLink)
	// Opening it only asks; the button changes the address.
	p := b.get(link)
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Use this address") {
		t.Fatalf("the link's page: %d %s", p.StatusCode, p.Body)
	}
	if _, _, me := call(t, "GET", ts.Issuer+"/api/me", tok.AccessToken, nil); me["email"] != "dave@example.com" {
		t.Fatalf("opening the link changed the address: %v", me)
	}
	if r := b.post(link, url.Values{"csrf_token": {formValues(p).Get("csrf_token")}}); r.StatusCode != 200 || !strings.Contains(r.Body, "now dave@new.example") {
		t.Fatalf("confirming: %d %s", r.StatusCode, r.Body)
	}
	if _, _, me := call(t, "GET", ts.Issuer+"/api/me", tok.AccessToken, nil); me["email"] != "dave@new.example" {
		t.Fatalf("after confirming: %v", me)
	}
	if r := b.post(link, url.Values{"csrf_token": {formValues(p).Get("csrf_token")}}); r.StatusCode != 404 {
		t.Errorf("the link a second time: %d", r.StatusCode)
	}
	// The old address is told.
	mails = sink.Wait(2, 10*time.Second)
	if len(mails) != 2 || mails[1].To[0] != "dave@example.com" || !strings.Contains(string(mails[1].Data), "changed") {
		t.Errorf("the old address was not told: %v", mails)
	}
	// The old address is free again, the new one taken.
	if status, _, _ := call(t, "POST", u, tok.AccessToken, map[string]any{"email": "dave@new.example"}); status != 400 {
		t.Errorf("changing to the current address: %d", status)
	}
}

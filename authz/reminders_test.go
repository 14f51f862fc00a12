package authz_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/mfa"
)

// TestMFAReminders sends reminders through a real SMTP server: to the
// members without MFA only, at most once a day each, with a link to set
// it up; a failed delivery is reported and not throttled.
func TestMFAReminders(t *testing.T) {
	sink := testenv.StartSMTP(t)
	ts := newTestServer(t, func(c *authz.Config) {
		withTeam(c)
		c.Mailer = mfa.SMTP{Addr: sink.Addr, RootCAs: sink.RootCAs()}
		c.MailFrom = "Stepup <no-reply@example.com>"
		c.ReminderInterval = 2 * time.Minute // the clock moves less than a token lives
	})
	_, alice := loginAs(t, ts, "alice")
	_, carol := loginAs(t, ts, "carol")
	_, dave := loginAs(t, ts, "dave")
	reminders := ts.Issuer + "/api/orgs/team/mfa-reminders"

	// carol has MFA, so "all without MFA" means alice and dave.
	cb, _ := loginAs(t, ts, "carol")
	enroll(t, ts, cb)

	status, _, body := call(t, "POST", reminders, carol.AccessToken, map[string]any{"all_without_mfa": true})
	if status != 200 || !slices.Equal(strs(body["sent"]), []string{"u_alice", "u_dave"}) || len(body["skipped"].([]any)) != 0 {
		t.Fatalf("remind all without MFA: %d %v", status, body)
	}
	mails := sink.Wait(2, 10*time.Second)
	if len(mails) != 2 {
		t.Fatalf("%d emails arrived, want 2", len(mails))
	}
	var to []string
	for _, m := range mails {
		to = append(to, m.To...)
		if !strings.Contains(m.Header("Subject"), "Turn on multi-factor authentication for Team") {
			t.Errorf("subject %q", m.Header("Subject"))
		}
		if !strings.Contains(m.Body(), ts.Issuer+"/account/security") {
			t.Errorf("no setup link in %q", m.Body())
		}
		if m.From != "no-reply@example.com" {
			t.Errorf("envelope sender %q", m.From)
		}
	}
	slices.Sort(to)
	if !slices.Equal(to, []string{"alice@example.com", "dave@example.com"}) {
		t.Fatalf("recipients %v", to)
	}

	// One at a time: reminded recently, has MFA, not a member.
	status, _, body = call(t, "POST", reminders, alice.AccessToken, map[string]any{"user_ids": []string{"u_dave", "u_carol", "u_bob", "u_dave"}})
	want := []any{
		map[string]any{"id": "u_dave", "reason": "reminded_recently"},
		map[string]any{"id": "u_carol", "reason": "mfa_enabled"},
		map[string]any{"id": "u_bob", "reason": "not_a_member"},
	}
	if status != 200 || len(strs(body["sent"])) != 0 || !equalJSON(body["skipped"], want) {
		t.Fatalf("second batch: %d %v", status, body)
	}
	if n := len(sink.Messages()); n != 2 {
		t.Fatalf("%d emails after a throttled batch, want still 2", n)
	}
	// The members list shows when.
	_, _, list := call(t, "GET", ts.Issuer+"/api/orgs/team/members", alice.AccessToken, nil)
	for _, m := range list["members"].([]any) {
		m := m.(map[string]any)
		if (m["id"] != "u_carol") != (m["last_reminded_at"] != nil) {
			t.Errorf("last_reminded_at of %s = %v", m["id"], m["last_reminded_at"])
		}
	}
	// After the interval dave can be reminded again; a failed delivery says
	// so and does not count.
	ts.Clock.Advance(3 * time.Minute)
	sink.Fail(true)
	_, _, body = call(t, "POST", reminders, alice.AccessToken, map[string]any{"user_ids": []string{"u_dave"}})
	if !equalJSON(body["skipped"], []any{map[string]any{"id": "u_dave", "reason": "delivery_failed"}}) {
		t.Fatalf("while SMTP fails: %v", body)
	}
	sink.Fail(false)
	_, _, body = call(t, "POST", reminders, alice.AccessToken, map[string]any{"user_ids": []string{"u_dave"}})
	if !slices.Equal(strs(body["sent"]), []string{"u_dave"}) {
		t.Fatalf("after SMTP recovers: %v", body)
	}

	// Members cannot send reminders; the batch is in the audit log.
	if status, _, _ := call(t, "POST", reminders, dave.AccessToken, map[string]any{"all_without_mfa": true}); status != 403 {
		t.Errorf("a member sending reminders: %d", status)
	}
	for _, bad := range []any{map[string]any{}, map[string]any{"user_ids": []string{"u_dave"}, "all_without_mfa": true}, map[string]any{"user_ids": "u_dave"}} {
		if status, _, _ := call(t, "POST", reminders, alice.AccessToken, bad); status != 400 {
			t.Errorf("POST %v: %d, want 400", bad, status)
		}
	}
	_, _, audit := call(t, "GET", ts.Issuer+"/api/orgs/team/audit", alice.AccessToken, nil)
	n := 0
	for _, e := range audit["events"].([]any) {
		if e.(map[string]any)["action"] == "mfa_reminders.send" {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d reminder batches in the audit log, want 4", n)
	}
}

func equalJSON(a, b any) bool {
	ja, _ := jsonMarshal(a)
	jb, _ := jsonMarshal(b)
	return ja == jb
}

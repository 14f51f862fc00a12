package authz_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// TestMetricsCountWhatHappened walks one person through the events the
// metrics report and reads each counter back from the registry.
func TestMetricsCountWhatHappened(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var flaky *flakyStore
	ts := newTestServer(t, func(c *authz.Config) {
		c.Metrics = reg
		flaky = &flakyStore{Store: c.Store}
		c.Store = flaky
		c.Orgs = append(c.Orgs, authz.Org{ID: "team", Name: "Team", Members: []authz.Member{
			{UserID: "u_alice", Role: "owner"}, {UserID: "u_bob", Role: "member"}}})
	})
	want := func(name string, labels map[string]string, v float64) {
		t.Helper()
		if got := metricValue(t, reg, name, labels); got != v {
			t.Errorf("%s%v = %v, want %v", name, labels, got, v)
		}
	}

	if status, body := postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, svcClient, svcSecret); status != 200 {
		t.Fatalf("client_credentials: %d %v", status, body)
	}
	want("stepup_tokens_issued_total", map[string]string{"grant": "client_credentials"}, 1)

	b := newBrowser(t, ts.Issuer)
	tok, cfg := exchange(t, ts, b)
	want("stepup_tokens_issued_total", map[string]string{"grant": "authorization_code"}, 1)
	want("stepup_logins_total", map[string]string{"amr": "pwd"}, 1)
	tok, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	want("stepup_tokens_issued_total", map[string]string{"grant": "refresh_token"}, 1)

	if status, _ := postSSH(t, ts, tok.AccessToken, []byte(`{"key":"`+strings.TrimSpace(userKey(t))+`"}`)); status != 200 {
		t.Fatalf("POST /ssh: %d", status)
	}
	want("stepup_ssh_certificates_issued_total", nil, 1)

	if status, _, body := call(t, "POST", ts.Issuer+"/api/orgs/team/mfa-reminders", tok.AccessToken,
		map[string]any{"user_ids": []string{"u_bob"}}); status != 200 || fmt.Sprint(body["sent"]) != "[u_bob]" {
		t.Fatalf("reminder: %d %v", status, body)
	}
	want("stepup_mfa_reminders_sent_total", nil, 1)

	want("stepup_org_members", map[string]string{"org": "team"}, 2)
	want("stepup_org_members_with_mfa", map[string]string{"org": "team"}, 0)

	// Alice turns MFA on in another browser; in the first one, whose
	// session has only the password, the next authorization is a step-up
	// to the code alone. A wrong code, then the right one.
	other := newBrowser(t, ts.Issuer)
	exchange(t, ts, other)
	secret, _ := enroll(t, ts, other)
	verifier := oauth2.GenerateVerifier()
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
	if p.Request.URL.Path != "/login/otp" {
		t.Fatalf("want the code page, got %d at %s", p.StatusCode, p.Request.URL)
	}
	want("stepup_step_ups_total", map[string]string{"reason": "otp"}, 1)
	wrong := code(t, secret, ts.Clock.Now().Add(-10*time.Minute))
	if p2 := submitCode(b, p, wrong); p2.StatusCode != 401 {
		t.Fatalf("wrong code: %d", p2.StatusCode)
	}
	want("stepup_totp_failures_total", map[string]string{"reason": "wrong"}, 1)
	redirectOf(t, submitCode(b, p, code(t, secret, ts.Clock.Now().Add(30*time.Second))))
	want("stepup_logins_total", map[string]string{"amr": "mfa otp pwd"}, 1)

	// Adoption is recounted once its minute is up.
	want("stepup_org_members_with_mfa", map[string]string{"org": "team"}, 0)
	ts.Clock.Advance(2 * time.Minute)
	want("stepup_org_members_with_mfa", map[string]string{"org": "team"}, 1)

	flaky.down.Store(true)
	if status, _ := postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, svcClient, svcSecret); status != 503 {
		t.Fatalf("client_credentials with the store down: %d", status)
	}
	want("stepup_store_errors_total", nil, 1)

	// The registry's own consistency checks (help, types, label names).
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Fatalf("gather: %d series, %v", n, err)
	}
}

// metricValue is the value of the series name{labels}, or -1 if there is
// none.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

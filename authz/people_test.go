package authz_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

// TestDirectorySurvivesRestartsAndReplicas: the config seeds the directory
// once; a change made at run time on one replica is seen by another on the
// same store, and a restart with the same config does not undo it.
func TestDirectorySurvivesRestartsAndReplicas(t *testing.T) {
	clk := &clock{}
	shared := memory.New(memory.Config{Now: clk.Now})
	share := func(c *authz.Config) { withTeam(c); c.Store, c.Now = shared, clk.Now }
	a := newTestServer(t, share)
	a.Clock = clk
	_, alice := loginAs(t, a, "alice")
	if status, _, body := call(t, "PATCH", a.Issuer+"/api/orgs/team/security", alice.AccessToken, map[string]any{"sso_provider": "acme"}); status != 200 {
		t.Fatalf("PATCH on A: %d %v", status, body)
	}
	// B is another replica, or A restarted, with the same config.
	b := newTestServer(t, share)
	b.Clock = clk
	_, aliceB := loginAs(t, b, "alice")
	status, _, body := call(t, "GET", b.Issuer+"/api/orgs/team", aliceB.AccessToken, nil)
	if status != http.StatusUnauthorized || body["error"] != "insufficient_user_authentication" {
		t.Fatalf("on B, team with sso_provider acme set on A: %d %v, want the step-up challenge", status, body)
	}
	status, _, me := call(t, "GET", b.Issuer+"/api/me", aliceB.AccessToken, nil)
	if status != 200 || len(me["orgs"].([]any)) != 2 {
		t.Fatalf("/api/me on B: %d %v", status, me)
	}
}

// TestSecurityChangedBeforeTheDirectoryCarriesOver: a deployment whose
// organization's settings were changed at run time before the directory
// existed (kept under org-security) keeps them when the directory is
// seeded.
func TestSecurityChangedBeforeTheDirectoryCarriesOver(t *testing.T) {
	store := memory.New(memory.Config{})
	if err := store.Put(bg, "org-security", "team", []byte(`{"mfa_required":true,"sso_provider":""}`), 0); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(c *authz.Config) { withTeam(c); c.Store = store; c.Now = time.Now })
	_, alice := loginAs(t, ts, "alice")
	status, _, body := call(t, "GET", ts.Issuer+"/api/orgs/team", alice.AccessToken, nil)
	if status != http.StatusUnauthorized || body["error"] != "insufficient_user_authentication" {
		t.Fatalf("team whose stored settings require MFA: %d %v", status, body)
	}
}

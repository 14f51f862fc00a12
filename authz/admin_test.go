package authz_test

import (
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// TestDisablingAPerson: an instance administrator lists people and
// disables one; every way in that person had stops at once.
func TestDisablingAPerson(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) { withTeam(c); c.Admins = []string{"u_alice"} })
	_, alice := loginAs(t, ts, "alice")
	daveBrowser, dave := loginAs(t, ts, "dave")
	_, _, created := call(t, "POST", ts.Issuer+"/api/me/api-tokens", dave.AccessToken, map[string]any{"name": "ci"})
	apiToken, _ := created["token"].(string)
	if apiToken == "" {
		t.Fatalf("dave's API token: %v", created)
	}

	// Only administrators.
	if status, _, _ := call(t, "GET", ts.Issuer+"/api/admin/users", dave.AccessToken, nil); status != 403 {
		t.Fatalf("a non-admin listing people: %d", status)
	}
	status, _, list := call(t, "GET", ts.Issuer+"/api/admin/users?limit=2", alice.AccessToken, nil)
	if status != 200 || len(list["users"].([]any)) != 2 || list["next"] == nil {
		t.Fatalf("the first page of people: %d %v", status, list)
	}
	for _, self := range []string{"u_alice", "alice", "ALICE"} {
		if status, _, body := call(t, "PATCH", ts.Issuer+"/api/admin/users/"+self, alice.AccessToken, map[string]any{"disabled": true}); status != 409 {
			t.Fatalf("disabling oneself as %s: %d %v", self, status, body)
		}
	}
	if status, _, body := call(t, "PATCH", ts.Issuer+"/api/admin/users/dave", alice.AccessToken, map[string]any{"disabled": true}); status != 200 || body["disabled"] != true {
		t.Fatalf("disabling dave: %d %v", status, body)
	}

	// Every way in is closed.
	if status, _, body := call(t, "GET", ts.Issuer+"/api/me", dave.AccessToken, nil); status != 401 || !strings.Contains(body["error_description"].(string), "disabled") {
		t.Errorf("dave's access token: %d %v", status, body)
	}
	if status, body := refresh(t, ts, dave.RefreshToken); status != 400 || body["error"] != "invalid_grant" {
		t.Errorf("dave's refresh token: %d %v", status, body)
	}
	if status, body := postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {apiToken}, "client_id": {cliClient}}, "", ""); status != 400 {
		t.Errorf("dave's API token: %d %v", status, body)
	}
	cfg := cliConfig(ts.Issuer, "53682")
	p := daveBrowser.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Errorf("dave's browser session still signs in: %d at %s", p.StatusCode, p.Request.URL)
	}
	if r := daveBrowser.login(p, "dave", alicePassword); r.StatusCode != 401 {
		t.Errorf("dave's password: %d", r.StatusCode)
	}

	// Enabled again, the password works again.
	if status, _, _ := call(t, "PATCH", ts.Issuer+"/api/admin/users/u_dave", alice.AccessToken, map[string]any{"disabled": false}); status != 200 {
		t.Fatal(status)
	}
	loginAs(t, ts, "dave")
}

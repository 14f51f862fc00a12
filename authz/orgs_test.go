package authz_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// withTeam adds an organization without requirements and its people:
// alice owns it, carol is an admin, dave a member; bob belongs elsewhere.
func withTeam(c *authz.Config) {
	c.Users = append(c.Users,
		authz.User{ID: "u_carol", Username: "carol", Email: "carol@example.com", PasswordHash: hashOnce(), EmailVerified: true},
		authz.User{ID: "u_dave", Username: "dave", Email: "dave@example.com", PasswordHash: hashOnce(), EmailVerified: true})
	c.Orgs = append(c.Orgs, authz.Org{ID: "team", Name: "Team", Members: []authz.Member{
		{UserID: "u_alice", Role: "owner"}, {UserID: "u_carol", Role: "admin"}, {UserID: "u_dave", Role: "member"}}})
	c.SSOProviders = []authz.SSOProvider{{ID: "acme", Issuer: "http://127.0.0.1:1", ClientID: "stepup"}}
}

// loginAs runs a CLI login in a new browser as username (password only).
func loginAs(t *testing.T, ts *testServer, username string) (*browser, *oauth2.Token) {
	t.Helper()
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	p := b.login(b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), username, alicePassword)
	tok, err := cfg.Exchange(bg, redirectOf(t, p).Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return b, tok
}

func call(t *testing.T, method, url, token string, body any) (int, http.Header, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: %d with a non-JSON body", method, url, resp.StatusCode)
	}
	return resp.StatusCode, resp.Header, out
}

func TestOrgAuthorizationMatrix(t *testing.T) {
	ts := newTestServer(t, withTeam)
	tokens := map[string]string{}
	for _, u := range []string{"alice", "carol", "dave", "bob"} {
		_, tok := loginAs(t, ts, u)
		tokens[u] = tok.AccessToken
	}
	tokens["nobody"] = ""
	type endpoint struct {
		method, path string
		body         any
	}
	endpoints := []endpoint{
		{"GET", "/api/orgs/team", nil},
		{"PATCH", "/api/orgs/team/security", map[string]any{"sso_provider": ""}},
		{"GET", "/api/orgs/team/members", nil},
		{"GET", "/api/orgs/team/audit", nil},
	}
	want := map[string][]int{
		"alice":  {200, 200, 200, 200},
		"carol":  {200, 200, 200, 200},
		"dave":   {200, 403, 403, 403},
		"bob":    {404, 404, 404, 404},
		"nobody": {401, 401, 401, 401},
	}
	for who, statuses := range want {
		for i, e := range endpoints {
			status, _, body := call(t, e.method, ts.Issuer+e.path, tokens[who], e.body)
			if status != statuses[i] || (status >= 400 && body["error_description"] == nil) {
				t.Errorf("%s %s as %s: %d %v, want %d", e.method, e.path, who, status, body, statuses[i])
			}
		}
	}
	// A non-member cannot tell an organization that exists from one that
	// does not.
	_, _, a := call(t, "GET", ts.Issuer+"/api/orgs/team", tokens["bob"], nil)
	_, _, b := call(t, "GET", ts.Issuer+"/api/orgs/no-such-org", tokens["bob"], nil)
	if a["error"] != b["error"] || a["error_description"] != b["error_description"] {
		t.Errorf("non-member answers differ: %v vs %v", a, b)
	}
	// bob sees his own organization.
	if status, _, _ := call(t, "GET", ts.Issuer+"/api/orgs/other", tokens["bob"], nil); status != 200 {
		t.Errorf("bob in his own org: %d", status)
	}
}

func TestRequireMFA(t *testing.T) {
	ts := newTestServer(t, withTeam)
	b, alice := loginAs(t, ts, "alice")
	_, dave := loginAs(t, ts, "dave")
	team := ts.Issuer + "/api/orgs/team"

	// Without MFA on her own account, alice may not require it.
	status, _, body := call(t, "PATCH", team+"/security", alice.AccessToken, map[string]any{"mfa_required": true})
	if status != 409 || body["error"] != "mfa_not_enabled" || !strings.Contains(body["error_description"].(string), "/account/security") {
		t.Fatalf("require MFA without MFA: %d %v", status, body)
	}
	for _, bad := range []any{map[string]any{}, map[string]any{"mfa_required": "yes"}, map[string]any{"sso_provider": "nope"}, map[string]any{"owner": "me"}} {
		if status, _, body := call(t, "PATCH", team+"/security", alice.AccessToken, bad); status != 400 || body["error_description"] == nil {
			t.Errorf("PATCH %v: %d %v, want 400", bad, status, body)
		}
	}

	// She enables MFA, logs in with both factors, and turns it on.
	secret, _ := enroll(t, ts, b)
	b2, p, v := passwordThenOTP(t, ts)
	alice = tokensFrom(t, ts, submitCode(b2, p, code(t, secret, ts.Clock.Now().Add(30*time.Second))), v)
	status, _, body = call(t, "PATCH", team+"/security", alice.AccessToken, map[string]any{"mfa_required": true})
	if status != 200 || body["mfa_required"] != true {
		t.Fatalf("require MFA with MFA: %d %v", status, body)
	}

	// dave's password-only token now gets the step-up challenge.
	status, h, body := call(t, "GET", team, dave.AccessToken, nil)
	if status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), `error="insufficient_user_authentication"`) ||
		!strings.Contains(h.Get("WWW-Authenticate"), `amr="mfa"`) || body["error"] != "insufficient_user_authentication" ||
		!slices.Equal(strs(body["amr"]), []string{"mfa"}) {
		t.Fatalf("dave after MFA is required: %d %q %v", status, h.Get("WWW-Authenticate"), body)
	}
	// Resource servers see the new requirement.
	if _, _, acc := call(t, "GET", ts.Issuer+"/api/orgs/team/access/u_dave", svcToken(t, ts), nil); !slices.Equal(strs(acc["requirements"].(map[string]any)["amr"]), []string{"mfa"}) {
		t.Errorf("access endpoint: %v", acc)
	}
	// Admins see who has MFA.
	_, _, list := call(t, "GET", team+"/members?mfa_enabled=false", alice.AccessToken, nil)
	var names []string
	for _, m := range list["members"].([]any) {
		names = append(names, m.(map[string]any)["username"].(string))
	}
	if !slices.Equal(names, []string{"carol", "dave"}) {
		t.Errorf("members without MFA: %v", names)
	}
	// The change is in the audit log.
	_, _, audit := call(t, "GET", team+"/audit", alice.AccessToken, nil)
	events := audit["events"].([]any)
	last := events[len(events)-1].(map[string]any)
	if last["actor"] != "u_alice" || last["action"] != "security.update" || last["at"] == "" {
		t.Errorf("audit = %v", audit)
	}
}

func svcToken(t *testing.T, ts *testServer) string {
	t.Helper()
	status, body := postForm(t, ts.Issuer+"/oauth2/token", map[string][]string{"grant_type": {"client_credentials"}, "scope": {"access.read"}}, svcClient, svcSecret)
	if status != 200 {
		t.Fatal(body)
	}
	return body["access_token"].(string)
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// callRaw sends a request and returns the status without decoding.
func callRaw(t *testing.T, method, url, token string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

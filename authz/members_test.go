package authz_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMemberRoleRules: who may change whose role, remove whom, or leave.
// team has alice (owner), carol (admin), dave (member); every case runs
// on a fresh server.
func TestMemberRoleRules(t *testing.T) {
	for _, tc := range []struct {
		name, caller, method, target string
		role                         string // for PATCH
		status                       int
		says                         string
	}{
		{"ok/owner-promotes-member-to-admin", "alice", "PATCH", "u_dave", "admin", 200, ""},
		{"ok/owner-makes-an-owner", "alice", "PATCH", "dave", "owner", 200, ""},
		{"ok/owner-demotes-admin", "alice", "PATCH", "u_carol", "member", 200, ""},
		{"ok/owner-removes-member", "alice", "DELETE", "u_dave", "", 204, ""},
		{"ok/admin-promotes-member", "carol", "PATCH", "u_dave", "admin", 200, ""},
		{"ok/admin-removes-member", "carol", "DELETE", "dave", "", 204, ""},
		{"ok/admin-steps-down", "carol", "PATCH", "u_carol", "member", 200, ""},
		{"ok/member-leaves", "dave", "DELETE", "u_dave", "", 204, ""},
		{"ok/admin-leaves", "carol", "DELETE", "carol", "", 204, ""},
		{"fail/admin-makes-an-owner", "carol", "PATCH", "u_dave", "owner", 403, "Only owners"},
		{"fail/admin-demotes-owner", "carol", "PATCH", "u_alice", "member", 403, "Only owners"},
		{"fail/admin-removes-owner", "carol", "DELETE", "u_alice", "", 403, "Only owners"},
		{"fail/member-changes-a-role", "dave", "PATCH", "u_carol", "member", 403, "owners and admins"},
		{"fail/member-promotes-self", "dave", "PATCH", "u_dave", "admin", 403, "owners and admins"},
		{"fail/member-removes-another", "dave", "DELETE", "u_carol", "", 403, "owners and admins"},
		{"fail/last-owner-steps-down", "alice", "PATCH", "u_alice", "admin", 409, "must keep an owner"},
		{"fail/last-owner-leaves", "alice", "DELETE", "alice", "", 409, "must keep an owner"},
		{"fail/no-such-role", "alice", "PATCH", "u_dave", "superuser", 400, "owner"},
		{"fail/not-a-member", "alice", "PATCH", "u_bob", "admin", 404, "not a member"},
		{"fail/nobody", "alice", "DELETE", "zed", "", 404, "not a member"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, withTeam)
			_, tok := loginAs(t, ts, tc.caller)
			var body any
			if tc.method == "PATCH" {
				body = map[string]any{"role": tc.role}
			}
			status, out := callStatus(t, tc.method, ts.Issuer+"/api/orgs/team/members/"+tc.target, tok.AccessToken, body)
			if status != tc.status {
				t.Fatalf("%s %s as %s: %d %v, want %d", tc.method, tc.target, tc.caller, status, out, tc.status)
			}
			if tc.says != "" && !strings.Contains(out["error_description"].(string), tc.says) {
				t.Errorf("error_description %q does not say %q", out["error_description"], tc.says)
			}
			if status >= 400 {
				return
			}
			// The change shows in the members list and the audit log, as
			// alice (an owner in every case that succeeds) sees them.
			_, owner := loginAs(t, ts, "alice")
			_, _, list := call(t, "GET", ts.Issuer+"/api/orgs/team/members", owner.AccessToken, nil)
			roles := map[string]string{}
			for _, m := range list["members"].([]any) {
				roles[m.(map[string]any)["id"].(string)] = m.(map[string]any)["role"].(string)
			}
			target := tc.target
			if !strings.HasPrefix(target, "u_") {
				target = "u_" + target
			}
			if got := roles[target]; (tc.method == "DELETE" && got != "") || (tc.method == "PATCH" && got != tc.role) {
				t.Errorf("after the change, %s is %q in %v", target, got, roles)
			}
			_, _, audit := call(t, "GET", ts.Issuer+"/api/orgs/team/audit", owner.AccessToken, nil)
			events := audit["events"].([]any)
			if last := events[len(events)-1].(map[string]any); !strings.HasPrefix(last["action"].(string), "member.") {
				t.Errorf("last audit event %v", last)
			}
		})
	}
}

// callStatus is call for answers that may have no body (204).
func callStatus(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("%s %s: %d with a non-JSON body %q", method, url, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, out
}

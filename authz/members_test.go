package authz_test

import (
	"encoding/json"
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
	if method == "DELETE" {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			return resp.StatusCode, nil
		}
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	status, _, out := call(t, method, url, token, body)
	return status, out
}

// TestCreateOrganization: a person creates an organization and owns it;
// bad ids and taken ones are refused; the new organization shows in
// /api/me and is managed like a seeded one.
func TestCreateOrganization(t *testing.T) {
	ts := newTestServer(t, withTeam)
	_, bob := loginAs(t, ts, "bob")
	status, _, body := call(t, "POST", ts.Issuer+"/api/orgs", bob.AccessToken, map[string]any{"id": "bobs-shop", "name": "Bob's shop"})
	if status != 201 || body["id"] != "bobs-shop" || body["name"] != "Bob's shop" || body["mfa_required"] != false {
		t.Fatalf("create: %d %v", status, body)
	}
	for _, bad := range []map[string]any{{"id": "Bobs"}, {"id": "-x"}, {"id": "x"}, {"id": strings.Repeat("a", 64)}, {"id": "ok-id", "extra": 1}, {}} {
		if status, _, body := call(t, "POST", ts.Issuer+"/api/orgs", bob.AccessToken, bad); status != 400 || body["error"] != "invalid_request" {
			t.Errorf("create %v: %d %v", bad, status, body)
		}
	}
	for _, taken := range []string{"bobs-shop", "team"} {
		if status, _, body := call(t, "POST", ts.Issuer+"/api/orgs", bob.AccessToken, map[string]any{"id": taken}); status != 409 || body["error"] != "org_exists" {
			t.Errorf("create %s again: %d %v", taken, status, body)
		}
	}
	_, _, me := call(t, "GET", ts.Issuer+"/api/me", bob.AccessToken, nil)
	found := false
	for _, o := range me["orgs"].([]any) {
		found = found || (o.(map[string]any)["id"] == "bobs-shop" && o.(map[string]any)["role"] == "owner")
	}
	if !found {
		t.Errorf("/api/me orgs %v lacks bobs-shop as owner", me["orgs"])
	}
	if status, _, body := call(t, "GET", ts.Issuer+"/api/orgs/bobs-shop/members", bob.AccessToken, nil); status != 200 || len(body["members"].([]any)) != 1 {
		t.Errorf("members of the new org: %d %v", status, body)
	}
	// A client's token creates nothing.
	if status, _, _ := call(t, "POST", ts.Issuer+"/api/orgs", svcToken(t, ts), map[string]any{"id": "svc-org"}); status != 403 {
		t.Errorf("a client creating an org: %d", status)
	}
}

// TestRemovedMemberLosesAccessAtOnce: the server's API answers a member
// removed a moment ago as a non-member, with the token they still hold.
func TestRemovedMemberLosesAccessAtOnce(t *testing.T) {
	ts := newTestServer(t, withTeam)
	_, alice := loginAs(t, ts, "alice")
	_, dave := loginAs(t, ts, "dave")
	if status, _, _ := call(t, "GET", ts.Issuer+"/api/orgs/team", dave.AccessToken, nil); status != 200 {
		t.Fatalf("dave before removal: %d", status)
	}
	if status, _ := callStatus(t, "DELETE", ts.Issuer+"/api/orgs/team/members/dave", alice.AccessToken, nil); status != 204 {
		t.Fatalf("removing dave: %d", status)
	}
	if status, _, _ := call(t, "GET", ts.Issuer+"/api/orgs/team", dave.AccessToken, nil); status != 404 {
		t.Fatalf("dave after removal: %d, want 404", status)
	}
	svc := svcToken(t, ts)
	if _, _, body := call(t, "GET", ts.Issuer+"/api/orgs/team/access/u_dave", svc, nil); body["member"] != false {
		t.Fatalf("the access API after removal: %v", body)
	}
}

// TestMembersPages: ?limit pages through the members with next.
func TestMembersPages(t *testing.T) {
	ts := newTestServer(t, withTeam)
	_, alice := loginAs(t, ts, "alice")
	var ids []string
	next := ""
	for range 5 {
		u := ts.Issuer + "/api/orgs/team/members?limit=2"
		if next != "" {
			u += "&after=" + next
		}
		status, _, body := call(t, "GET", u, alice.AccessToken, nil)
		if status != 200 {
			t.Fatalf("page: %d %v", status, body)
		}
		for _, m := range body["members"].([]any) {
			ids = append(ids, m.(map[string]any)["id"].(string))
		}
		n, more := body["next"].(string)
		if !more {
			break
		}
		next = n
	}
	if strings.Join(ids, ",") != "u_alice,u_carol,u_dave" {
		t.Fatalf("paged members %v", ids)
	}
	for _, bad := range []string{"limit=0", "limit=501", "limit=x"} {
		if status, _, _ := call(t, "GET", ts.Issuer+"/api/orgs/team/members?"+bad, alice.AccessToken, nil); status != 400 {
			t.Errorf("%s: %d", bad, status)
		}
	}
}

package authz_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"golang.org/x/oauth2/clientcredentials"
)

func getJSON(t *testing.T, url, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
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
		t.Fatalf("%s: %d with a non-JSON body", url, resp.StatusCode)
	}
	return resp.StatusCode, out
}

func TestAccessEndpointForResourceServers(t *testing.T) {
	ts := newTestServer(t, nil)
	svc, err := (&clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret,
		TokenURL: ts.Issuer + "/oauth2/token", Scopes: []string{"access.read"}}).Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	status, body := getJSON(t, ts.Issuer+"/api/orgs/acme/access/u_alice", svc.AccessToken)
	req, _ := body["requirements"].(map[string]any)
	if status != 200 || body["member"] != true || body["role"] != "owner" || req == nil || req["max_age"] != nil {
		t.Fatalf("alice in acme: %d %v", status, body)
	}
	if amr := strs(req["amr"]); len(amr) != 2 || amr[0] != "mfa" || amr[1] != "sso:acme" {
		t.Fatalf("acme's requirements: %v", amr)
	}
	for _, path := range []string{"/api/orgs/acme/access/u_bob", "/api/orgs/nope/access/u_alice"} {
		if status, body := getJSON(t, ts.Issuer+path, svc.AccessToken); status != 200 || body["member"] != false || len(body) != 1 {
			t.Errorf("%s: %d %v, want only member=false", path, status, body)
		}
	}
	// A person's token lacks access.read.
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	if status, body := getJSON(t, ts.Issuer+"/api/orgs/acme/access/u_alice", tok.AccessToken); status != 403 || body["error"] != "insufficient_scope" {
		t.Errorf("with a person's token: %d %v", status, body)
	}
	if status, body := getJSON(t, ts.Issuer+"/api/orgs/acme/access/u_alice", ""); status != 401 || body["error"] == nil {
		t.Errorf("without a token: %d %v", status, body)
	}
	if status, _ := getJSON(t, ts.Issuer+"/api/orgs/acme/access/u_alice", "garbage"); status != 401 {
		t.Errorf("with a garbage token: %d", status)
	}
}

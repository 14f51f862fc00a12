package authz_test

import (
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
)

// TestServiceLookup: GET /api/services/{service} tells a member of the
// service's organization where its gateway listens, without asking for the
// step-up that the gateway will ask for; to anyone else a service of
// another organization looks like no service at all.
func TestServiceLookup(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		c.Services = []authz.Service{
			{ID: "app", Org: "acme", SSHAddress: "gw.example.com:2222"},
			{ID: "plain", Org: "other"},
		}
	})
	_, alice := loginAs(t, ts, "alice")
	_, bob := loginAs(t, ts, "bob")
	svc, err := (&clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret,
		TokenURL: ts.Issuer + "/oauth2/token", Scopes: []string{"access.read"}}).Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	notFound := map[string]any{"error": "not_found", "error_description": "There is no service with that id that you can see."}
	for _, tc := range []struct {
		name, service, token string
		status               int
		want                 map[string]any // the whole body; nil: only the error code
		code                 string
	}{
		// acme demands mfa and sso:acme, which alice's password login
		// lacks: the gateway says so when she connects, not this lookup.
		{name: "ok/member-of-a-demanding-org", service: "app", token: alice.AccessToken, status: 200,
			want: map[string]any{"id": "app", "org": "acme", "ssh_address": "gw.example.com:2222"}},
		{name: "ok/no-address-configured", service: "plain", token: bob.AccessToken, status: 200,
			want: map[string]any{"id": "plain", "org": "other", "ssh_address": nil}},
		{name: "fail/not-a-member", service: "app", token: bob.AccessToken, status: 404, want: notFound},
		{name: "fail/unknown-service", service: "nosuchservice", token: alice.AccessToken, status: 404, want: notFound},
		{name: "fail/no-token", service: "app", status: 401, code: "invalid_request"},
		{name: "fail/garbage-token", service: "app", token: "garbage", status: 401, code: "invalid_token"},
		{name: "fail/client-token", service: "app", token: svc.AccessToken, status: 403, code: "access_denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := getJSON(t, ts.Issuer+"/api/services/"+tc.service, tc.token)
			if status != tc.status {
				t.Fatalf("%d %v, want %d", status, body, tc.status)
			}
			if tc.want != nil && !reflect.DeepEqual(body, tc.want) {
				t.Errorf("body %v\nwant %v", body, tc.want)
			}
			if tc.code != "" && body["error"] != tc.code {
				t.Errorf("error %v, want %s: %v", body["error"], tc.code, body)
			}
		})
	}

	// Without a token, the answer says how to send one.
	resp, err := http.Get(ts.Issuer + "/api/services/app")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("401 headers: %v", resp.Header)
	}
}

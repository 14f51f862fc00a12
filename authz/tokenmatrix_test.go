package authz_test

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
	"github.com/stepup-dev/stepup/internal/gateway"
)

const (
	rpClient = "third-party-rp"
	rpSecret = "rp-secret-0123456789abcdef0123"
	otherAud = "https://api.other.example"
)

// withRelyingParty adds a third-party relying party (a confidential client
// people sign in to with Stepup, not one of Stepup's own tools), an
// organization without requirements that alice owns, and lets the CLI ask
// for a token meant for another resource server.
func withRelyingParty(c *authz.Config) {
	withTeam(c)
	c.Clients = append(c.Clients, authz.Client{ID: rpClient, SecretHash: authz.HashClientSecret(rpSecret),
		RedirectURIs: []string{"https://rp.example/callback"},
		GrantTypes:   []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "client_secret_basic"})
	c.Clients[0].Audience = []string{otherAud}
}

// codeLogin logs alice in through a new browser for cfg's client and
// exchanges the code.
func codeLogin(t *testing.T, ts *testServer, cfg *oauth2.Config, extra ...oauth2.AuthCodeOption) *oauth2.Token {
	t.Helper()
	v := oauth2.GenerateVerifier()
	back := newBrowser(t, ts.Issuer).authorize(cfg.AuthCodeURL("state-0123456789", append(extra, oauth2.S256ChallengeOption(v))...))
	if e := back.Query().Get("error"); e != "" {
		t.Fatalf("authorization failed: %s: %s", e, back.Query().Get("error_description"))
	}
	tok, err := cfg.Exchange(bg, back.Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTokenMatrix presents every kind of token Stepup hands out at every
// endpoint the server protects itself, and checks each answer. Only a
// first-party client's access token for a person, meant for Stepup (aud),
// and not revoked, works at /api and /ssh; userinfo takes any client's
// access token with openid; the access API takes client credentials with
// access.read.
func TestTokenMatrix(t *testing.T) {
	ts := newTestServer(t, withRelyingParty)

	cli := codeLogin(t, ts, cliConfig(ts.Issuer, "53682"))
	console := codeLogin(t, ts, webConfig(ts.Issuer))
	rpCfg := webConfig(ts.Issuer)
	rpCfg.ClientID, rpCfg.ClientSecret, rpCfg.RedirectURL = rpClient, rpSecret, "https://rp.example/callback"
	rp := codeLogin(t, ts, rpCfg)
	otherAudience := codeLogin(t, ts, cliConfig(ts.Issuer, "53682"), oauth2.SetAuthURLParam("audience", otherAud))
	revoked := codeLogin(t, ts, cliConfig(ts.Issuer, "53682"))
	if status, body := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {revoked.RefreshToken}, "client_id": {cliClient}}, "", ""); status != 200 {
		t.Fatalf("revoking: %d %v", status, body)
	}

	status, _, created := call(t, "POST", ts.Issuer+"/api/me/api-tokens", cli.AccessToken, map[string]any{"name": "matrix"})
	if status != 201 {
		t.Fatalf("creating an API token: %d %v", status, created)
	}
	apiToken := created["token"].(string)
	status, viaAPIToken := postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {apiToken},
		"client_id": {cliClient}, "scope": {"openid"}}, "", "")
	if status != 200 {
		t.Fatalf("exchanging the API token: %d %v", status, viaAPIToken)
	}

	kinds := []struct{ name, token string }{
		{"access/cli", cli.AccessToken},
		{"access/console", console.AccessToken},
		{"access/from-api-token", viaAPIToken["access_token"].(string)},
		{"refresh", cli.RefreshToken},
		{"id-token", cli.Extra("id_token").(string)},
		{"api-token", apiToken},
		{"client-credentials", svcToken(t, ts)},
		{"another-audience", otherAudience.AccessToken},
		{"third-party-client", rp.AccessToken},
		{"revoked", revoked.AccessToken},
		{"none", ""},
	}
	// The reference resource server, stepup-gateway's HTTP API, on the same
	// tokens: it checks them offline against the JWKS and asks the server's
	// access API (with its own client credentials) about membership.
	gw, err := gateway.New(gateway.Config{Issuer: ts.Issuer, Services: map[string]string{"svc": "team"},
		ClientID: svcClient, ClientSecret: svcSecret, GitRoot: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	gwAPI, err := gw.HTTPHandler()
	if err != nil {
		t.Fatal(err)
	}
	gwServer := httptest.NewServer(gwAPI)
	t.Cleanup(gwServer.Close)

	key := keyBody(userKey(t))
	endpoints := []struct {
		name, method, path string
		body               any
		base               string // default ts.Issuer
	}{
		{"me", "GET", "/api/me", nil, ""},
		{"create-api-token", "POST", "/api/me/api-tokens", map[string]any{"name": "more"}, ""},
		{"list-api-tokens", "GET", "/api/me/api-tokens", nil, ""},
		{"delete-api-token", "DELETE", "/api/me/api-tokens/nosuchtoken0", nil, ""},
		{"org", "GET", "/api/orgs/team", nil, ""},
		{"members", "GET", "/api/orgs/team/members", nil, ""},
		{"org-security", "PATCH", "/api/orgs/team/security", map[string]any{"sso_provider": ""}, ""},
		{"audit", "GET", "/api/orgs/team/audit", nil, ""},
		{"reminders", "POST", "/api/orgs/team/mfa-reminders", map[string]any{"user_ids": []string{"u_dave"}}, ""},
		{"access", "GET", "/api/orgs/team/access/u_alice", nil, ""},
		{"userinfo", "GET", "/oauth2/userinfo", nil, ""},
		{"ssh", "POST", "/ssh", json.RawMessage(key), ""},
		{"gateway", "GET", "/projects/svc", nil, gwServer.URL},
	}
	// want[kind][endpoint]; every cell is asserted. The gateway checks
	// tokens offline, so a revoked one works there until it expires (an
	// hour at most); SSH certificate revocation is the answer for it.
	const ok, created201, unauth, forbid, missing = http.StatusOK, http.StatusCreated, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound
	all := func(s int) []int { return slices.Repeat([]int{s}, 13) }
	want := map[string][]int{
		//                        me  create      list delete   org members security audit reminders access  userinfo ssh gateway
		"access/cli":            {ok, created201, ok, missing, ok, ok, ok, ok, ok, forbid, ok, ok, ok},
		"access/console":        {ok, created201, ok, missing, ok, ok, ok, ok, ok, forbid, ok, ok, ok},
		"access/from-api-token": {ok, forbid, ok, missing, ok, ok, forbid, ok, ok, forbid, ok, ok, ok},
		"refresh":               all(unauth),
		"id-token":              all(unauth),
		"api-token":             all(unauth),
		"client-credentials":    {forbid, forbid, forbid, forbid, forbid, forbid, forbid, forbid, forbid, ok, forbid, forbid, unauth},
		"another-audience":      all(unauth),
		"third-party-client":    {unauth, unauth, unauth, unauth, unauth, unauth, unauth, unauth, unauth, forbid, ok, unauth, unauth},
		"revoked":               append(all(unauth)[:12], ok),
		"none":                  all(unauth),
	}
	for _, k := range kinds {
		for i, e := range endpoints {
			t.Run(k.name+"/"+e.name, func(t *testing.T) {
				status, hdr, body := call(t, e.method, cmp.Or(e.base, ts.Issuer)+e.path, k.token, e.body)
				if status != want[k.name][i] {
					t.Fatalf("%s %s with a %s token: %d %v, want %d", e.method, e.path, k.name, status, body, want[k.name][i])
				}
				if status >= 400 {
					if body["error"] == nil || body["error_description"] == "" {
						t.Errorf("refusal without an error and a description: %v", body)
					}
					if status == unauth && hdr.Get("WWW-Authenticate") == "" {
						t.Errorf("401 without WWW-Authenticate")
					}
				}
			})
		}
	}
}

// TestManagementScope: with a management scope configured, a first-party
// token without it reads but does not manage.
func TestManagementScope(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		withTeam(c)
		c.ManageScope = "stepup.manage"
		c.Clients[0].Scopes = append(c.Clients[0].Scopes, "stepup.manage")
	})
	plain := codeLogin(t, ts, cliConfig(ts.Issuer, "53682"))
	cfg := cliConfig(ts.Issuer, "53682")
	cfg.Scopes = append(cfg.Scopes, "stepup.manage")
	manage := codeLogin(t, ts, cfg)
	for _, tc := range []struct {
		name, token, method, path string
		body                      any
		want                      int
	}{
		{"ok/me-without-scope", plain.AccessToken, "GET", "/api/me", nil, 200},
		{"ok/org-without-scope", plain.AccessToken, "GET", "/api/orgs/team", nil, 200},
		{"fail/members-without-scope", plain.AccessToken, "GET", "/api/orgs/team/members", nil, 403},
		{"fail/api-token-without-scope", plain.AccessToken, "POST", "/api/me/api-tokens", map[string]any{"name": "x"}, 403},
		{"ok/members-with-scope", manage.AccessToken, "GET", "/api/orgs/team/members", nil, 200},
		{"ok/api-token-with-scope", manage.AccessToken, "POST", "/api/me/api-tokens", map[string]any{"name": "x"}, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := call(t, tc.method, ts.Issuer+tc.path, tc.token, tc.body)
			if status != tc.want {
				t.Fatalf("%d %v, want %d", status, body, tc.want)
			}
			if status == 403 && (body["error"] != "insufficient_scope" || hdr.Get("WWW-Authenticate") == "") {
				t.Errorf("want insufficient_scope naming the scope: %v %v", body, hdr)
			}
		})
	}
}

// TestClientIDMayNotBeAUserID: a client_credentials token's sub is the
// client's id, so a client named like a person would act as that person.
func TestClientIDMayNotBeAUserID(t *testing.T) {
	cfg := baseConfig(memory.New(memory.Config{}), time.Now)
	cfg.Issuer = "http://127.0.0.1:1"
	cfg.Clients = append(cfg.Clients, authz.Client{ID: "u_alice", SecretHash: authz.HashClientSecret(svcSecret),
		GrantTypes: []string{"client_credentials"}, Scopes: []string{"access.read"}, TokenEndpointAuthMethod: "client_secret_basic"})
	if _, err := authz.New(cfg); err == nil || !strings.Contains(err.Error(), `client id "u_alice" is also a user id`) {
		t.Fatalf("New with a client named u_alice: %v", err)
	}
}

// TestIntrospectionWantsClientCredentials: a bearer token is no credential
// for introspection, or any relying party could ask whose tokens are live.
func TestIntrospectionWantsClientCredentials(t *testing.T) {
	ts := newTestServer(t, withRelyingParty)
	cli := codeLogin(t, ts, cliConfig(ts.Issuer, "53682"))
	rpCfg := webConfig(ts.Issuer)
	rpCfg.ClientID, rpCfg.ClientSecret, rpCfg.RedirectURL = rpClient, rpSecret, "https://rp.example/callback"
	rp := codeLogin(t, ts, rpCfg)
	introspect := func(header string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", ts.Issuer+"/oauth2/introspect", strings.NewReader(url.Values{"token": {cli.RefreshToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	for _, bearer := range []string{rp.AccessToken, cli.AccessToken} {
		if status, body := introspect("Bearer " + bearer); status != 401 || body["error"] != "invalid_client" || body["active"] != nil {
			t.Fatalf("introspection with a bearer token: %d %v", status, body)
		}
	}
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(rpClient, rpSecret)
	if status, body := introspect(req.Header.Get("Authorization")); status != 200 || body["active"] != true {
		t.Fatalf("introspection with client credentials: %d %v", status, body)
	}
}

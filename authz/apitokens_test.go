package authz_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAPITokens(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b)
	secret, _ := enroll(t, ts, b)
	b2, p, v := passwordThenOTP(t, ts)
	mfa := tokensFrom(t, ts, submitCode(b2, p, code(t, secret, ts.Clock.Now().Add(30*time.Second))), v)
	tokensURL := ts.Issuer + "/api/me/api-tokens"

	status, _, created := call(t, "POST", tokensURL, mfa.AccessToken, map[string]any{"name": "ci deploys"})
	raw, _ := created["token"].(string)
	if status != 201 || created["name"] != "ci deploys" || !strings.HasPrefix(raw, "stpa_") || created["id"] == nil {
		t.Fatalf("create: %d %v", status, created)
	}
	// Listed without the secret.
	_, _, list := call(t, "GET", tokensURL, mfa.AccessToken, nil)
	items := list["tokens"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["token"] != nil || items[0].(map[string]any)["id"] != created["id"] {
		t.Fatalf("list: %v", list)
	}

	exchangeAPIToken := func(tok string) (int, map[string]any) {
		return postForm(t, ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {tok},
			"client_id": {cliClient}, "scope": {"openid"}}, "", "")
	}
	status, body := exchangeAPIToken(raw)
	if status != 200 || body["refresh_token"] != nil {
		t.Fatalf("exchange: %d %v", status, body)
	}
	_, c := jwtParts(t, body["access_token"].(string))
	if c["grant"] != "api_token" || c["sub"] != "u_alice" || !slices.Equal(strs(c["amr"]), []string{"otp", "pwd", "mfa"}) {
		t.Fatalf("claims of an API token's access token: %v", c)
	}
	if status, _, me := call(t, "GET", ts.Issuer+"/api/me", body["access_token"].(string), nil); status != 200 || me["id"] != "u_alice" {
		t.Fatalf("/api/me with it: %d %v", status, me)
	}
	// Such an access token cannot mint more API tokens.
	if status, _, _ := call(t, "POST", tokensURL, body["access_token"].(string), map[string]any{"name": "x"}); status != 403 {
		t.Errorf("API token creating API tokens: %d", status)
	}

	// Change the secret's last character to a different one.
	flipped := raw[:len(raw)-1] + map[bool]string{true: "B", false: "A"}[strings.HasSuffix(raw, "A")]
	for _, bad := range []string{flipped, "stpa_garbage", "", strings.Repeat("x", 5000)} {
		if status, body := exchangeAPIToken(bad); status != 400 || body["error"] != "invalid_grant" {
			t.Errorf("exchange of %.20q: %d %v", bad, status, body)
		}
	}
	for _, bad := range []any{map[string]any{}, map[string]any{"name": strings.Repeat("n", 101)}, map[string]any{"name": "x", "admin": true}} {
		if status, _, _ := call(t, "POST", tokensURL, mfa.AccessToken, bad); status != 400 {
			t.Errorf("create with %v: %d", bad, status)
		}
	}
	if status, _, _ := call(t, "POST", tokensURL, svcToken(t, ts), map[string]any{"name": "x"}); status != 403 {
		t.Errorf("a client creating an API token: %d", status)
	}

	// Deleted, it no longer exchanges.
	id := created["id"].(string)
	if status := deleteStatus(t, tokensURL+"/"+id, mfa.AccessToken); status != 204 {
		t.Fatalf("delete: %d", status)
	}
	if status, body := exchangeAPIToken(raw); status != 400 || body["error"] != "invalid_grant" {
		t.Fatalf("exchange after delete: %d %v", status, body)
	}
	if status := deleteStatus(t, tokensURL+"/"+id, mfa.AccessToken); status != 404 {
		t.Fatalf("second delete: %d", status)
	}
}

func deleteStatus(t *testing.T, u, token string) int {
	t.Helper()
	status, _, _ := callRaw(t, "DELETE", u, token)
	return status
}

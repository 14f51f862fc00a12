package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
)

var bg = context.Background()

// jwtParts decodes a JWT's header and claims without verifying it.
func jwtParts(t testing.TB, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWT: %q", token)
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestCodeFlowWithPKCE(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "49152") // any loopback port is accepted (RFC 8252)
	verifier := oauth2.GenerateVerifier()
	nonce := "nonce-0123456789abcdef"

	back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
	if got := back.Host; got != "127.0.0.1:49152" {
		t.Fatalf("redirected to %s, want the CLI's loopback port", back)
	}
	q := back.Query()
	if q.Get("iss") != ts.Issuer {
		t.Errorf("iss in the authorization response = %q, want %q (RFC 9207)", q.Get("iss"), ts.Issuer)
	}
	if q.Get("state") != "state-0123456789" {
		t.Errorf("state = %q", q.Get("state"))
	}
	tok, err := cfg.Exchange(bg, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Error("no refresh token despite offline_access")
	}

	// The ID token, checked by an independent verifier.
	provider, err := oidc.NewProvider(bg, ts.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: cliClient}).Verify(bg, rawID)
	if err != nil {
		t.Fatalf("go-oidc rejects the ID token: %v", err)
	}
	var idc struct {
		AMR      []string `json:"amr"`
		AuthTime int64    `json:"auth_time"`
		ACR      string   `json:"acr"`
		Nonce    string   `json:"nonce"`
		Email    string   `json:"email"`
		Verified bool     `json:"email_verified"`
	}
	if err := idt.Claims(&idc); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "u_alice" || !slices.Equal(idc.AMR, []string{"pwd"}) || idc.AuthTime == 0 || idc.ACR == "" ||
		idc.Nonce != nonce || idc.Email != "alice@example.com" || !idc.Verified {
		t.Errorf("ID token claims: sub=%s %+v", idt.Subject, idc)
	}

	// The access token is an RFC 9068 JWT carrying amr.
	h, c := jwtParts(t, tok.AccessToken)
	if h["typ"] != "at+jwt" || h["alg"] != "ES256" || h["kid"] == "" {
		t.Errorf("access token header = %v", h)
	}
	if c["iss"] != ts.Issuer || c["sub"] != "u_alice" || c["client_id"] != cliClient || c["grant"] != "authorization_code" ||
		!slices.Equal(strs(c["amr"]), []string{"pwd"}) || c["auth_time"] == nil || c["jti"] == "" ||
		!slices.Contains(strs(c["scp"]), "openid") || !slices.Equal(strs(c["aud"]), []string{ts.Issuer}) {
		t.Errorf("access token claims = %v", c)
	}

	// Userinfo with the access token.
	resp, err := cfg.Client(bg, tok).Get(ts.Issuer + "/oauth2/userinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ui map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&ui)
	resp.Body.Close()
	if resp.StatusCode != 200 || ui["sub"] != "u_alice" || ui["email"] != "alice@example.com" || ui["mfa_enabled"] != false {
		t.Errorf("userinfo = %d %v", resp.StatusCode, ui)
	}

	// A second authorization reuses the browser session: no login page.
	back = b.authorize(cfg.AuthCodeURL("state-abcdefghij", oauth2.S256ChallengeOption(verifier)))
	if back.Query().Get("code") == "" {
		t.Fatalf("second authorization: %s", back)
	}
}

func TestAuthorizeRefusedBeforeLogin(t *testing.T) {
	ts := newTestServer(t, nil)
	cfg := cliConfig(ts.Issuer, "50000")
	challenge := oauth2.S256ChallengeOption(oauth2.GenerateVerifier())
	for _, tc := range []struct {
		name      string
		url       string
		wantError string // error in the redirect; "" means an error page instead
		wantPage  int
		wantText  string // on the error page, when set
	}{
		{"fail/public-client-without-pkce", cfg.AuthCodeURL("state-0123456789"), "invalid_request", 0, ""},
		{"fail/plain-pkce", cfg.AuthCodeURL("state-0123456789", oauth2.SetAuthURLParam("code_challenge", strings.Repeat("a", 43)),
			oauth2.SetAuthURLParam("code_challenge_method", "plain")), "invalid_request", 0, ""},
		{"fail/unsupported-response-type", strings.Replace(cfg.AuthCodeURL("state-0123456789", challenge), "response_type=code", "response_type=token", 1), "unsupported_response_type", 0, ""},
		{"fail/unknown-amr", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("amr", "hwk")), "unmet_authentication_requirements", 0, ""},
		{"fail/bad-max-age", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("max_age", "-5")), "invalid_request", 0, ""},
		{"fail/absurd-max-age", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("max_age", "99999999999999")), "invalid_request", 0, ""},
		{"fail/huge-amr", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("amr", strings.Repeat("mfa ", 100))), "invalid_request", 0, ""},
		{"fail/unknown-sso-provider", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("amr", "mfa sso:nobody")), "unmet_authentication_requirements", 0, ""},
		{"fail/prompt-none-mixed", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("prompt", "none login")), "invalid_request", 0, ""},
		{"fail/prompt-none-without-session", cfg.AuthCodeURL("state-0123456789", challenge, oauth2.SetAuthURLParam("prompt", "none")), "login_required", 0, ""},
		{"fail/unknown-client", strings.Replace(cfg.AuthCodeURL("state-0123456789", challenge), "client_id=stepup-cli", "client_id=nobody", 1), "", http.StatusUnauthorized,
			"The application that sent you here is not registered with this sign-in service."},
		{"fail/unregistered-redirect", strings.Replace(cfg.AuthCodeURL("state-0123456789", challenge), "%2Fcallback", "%2Fevil", 1), "", http.StatusBadRequest,
			"The application asked to return to an address that is not registered for it"},
		{"fail/non-loopback-http-redirect", strings.Replace(cfg.AuthCodeURL("state-0123456789", challenge), "http%3A%2F%2F127.0.0.1", "http%3A%2F%2Fevil.example", 1), "", http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newBrowser(t, ts.Issuer).get(tc.url)
			if tc.wantError == "" {
				if p.StatusCode != tc.wantPage || !strings.Contains(p.Header.Get("Content-Type"), "text/html") || strings.Contains(p.Request.URL.Path, "login") {
					t.Fatalf("want an error page with status %d, got %d %s at %s", tc.wantPage, p.StatusCode, p.Header.Get("Content-Type"), p.Request.URL)
				}
				if p.Header.Get("Location") != "" {
					t.Fatal("redirected to an untrusted redirect URI")
				}
				if !strings.Contains(html.UnescapeString(p.Body), tc.wantText) || strings.Contains(p.Body, "The requested OAuth 2.0 Client does not exist") {
					t.Errorf("the error page says %s, want %q", p.Body, tc.wantText)
				}
				return
			}
			u := redirectOf(t, p)
			if u.Query().Get("error") != tc.wantError || u.Query().Get("iss") != ts.Issuer || u.Query().Get("state") != "state-0123456789" {
				t.Fatalf("redirect = %s, want error=%s with iss and state", u, tc.wantError)
			}
			if u.Query().Get("error_description") == "" {
				t.Error("no error_description")
			}
		})
	}
}

func TestTokenEndpointFailures(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")
	newCode := func(verifier string) string {
		t.Helper()
		back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
		return back.Query().Get("code")
	}
	tokenURL := ts.Issuer + "/oauth2/token"

	t.Run("fail/bad-pkce-verifier", func(t *testing.T) {
		code := newCode(oauth2.GenerateVerifier())
		_, err := cfg.Exchange(bg, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if oauthErrorOf(err) != "invalid_grant" {
			t.Fatalf("got %v, want invalid_grant", err)
		}
	})
	t.Run("fail/missing-verifier", func(t *testing.T) {
		code := newCode(oauth2.GenerateVerifier())
		_, err := cfg.Exchange(bg, code)
		if e := oauthErrorOf(err); e != "invalid_grant" && e != "invalid_request" {
			t.Fatalf("got %v, want invalid_grant or invalid_request", err)
		}
	})
	t.Run("fail/redirect-uri-mismatch", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		code := newCode(v)
		other := *cfg
		other.RedirectURL = "http://127.0.0.1:1/callback"
		if _, err := other.Exchange(bg, code, oauth2.VerifierOption(v)); oauthErrorOf(err) != "invalid_grant" {
			t.Fatalf("got %v, want invalid_grant", err)
		}
	})
	t.Run("fail/replayed-code-revokes-its-tokens", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		code := newCode(v)
		tok, err := cfg.Exchange(bg, code, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cfg.Exchange(bg, code, oauth2.VerifierOption(v)); oauthErrorOf(err) != "invalid_grant" {
			t.Fatalf("replay: got %v, want invalid_grant", err)
		}
		if active(t, ts, tok.AccessToken) {
			t.Error("the access token issued for a replayed code is still active")
		}
		if _, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); oauthErrorOf(err) != "invalid_grant" {
			t.Errorf("refresh after code replay: got %v, want invalid_grant", err)
		}
	})
	t.Run("fail/expired-code", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		code := newCode(v)
		ts.Clock.Advance(11 * time.Minute)
		defer ts.Clock.Advance(-11 * time.Minute)
		if _, err := cfg.Exchange(bg, code, oauth2.VerifierOption(v)); oauthErrorOf(err) != "invalid_grant" {
			t.Fatalf("got %v, want invalid_grant", err)
		}
	})
	for _, tc := range []struct {
		name      string
		form      url.Values
		user, pw  string
		status    int
		wantError string
	}{
		{"fail/unknown-grant-type", url.Values{"grant_type": {"password"}, "client_id": {cliClient}}, "", "", 400, "unsupported_grant_type"},
		{"fail/no-grant-type", url.Values{"client_id": {cliClient}}, "", "", 400, "invalid_request"},
		{"fail/garbage-code", url.Values{"grant_type": {"authorization_code"}, "client_id": {cliClient}, "code": {"stpc_not.a-code"},
			"redirect_uri": {"http://127.0.0.1:53682/callback"}, "code_verifier": {oauth2.GenerateVerifier()}}, "", "", 400, "invalid_grant"},
		{"fail/unknown-client", url.Values{"grant_type": {"authorization_code"}, "client_id": {"nobody"}, "code": {"x"}}, "", "", 401, "invalid_client"},
		{"fail/wrong-client-secret", url.Values{"grant_type": {"client_credentials"}}, svcClient, "wrong", 401, "invalid_client"},
		// fosite's answer; its description says the client is public.
		{"fail/public-client-cannot-use-client-credentials", url.Values{"grant_type": {"client_credentials"}, "client_id": {cliClient}}, "", "", 400, "invalid_grant"},
		{"fail/scope-not-allowed", url.Values{"grant_type": {"client_credentials"}, "scope": {"admin"}}, svcClient, svcSecret, 400, "invalid_scope"},
		{"fail/garbage-refresh-token", url.Values{"grant_type": {"refresh_token"}, "client_id": {cliClient}, "refresh_token": {"stpr_\x00\xff"}}, "", "", 400, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postForm(t, tokenURL, tc.form, tc.user, tc.pw)
			if status != tc.status || body["error"] != tc.wantError || body["error_description"] == "" {
				t.Fatalf("got %d %v, want %d %s with a description", status, body, tc.status, tc.wantError)
			}
		})
	}
	t.Run("fail/oversized-body", func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}, "junk": {strings.Repeat("x", 1<<20)}}
		status, body := postForm(t, tokenURL, form, svcClient, svcSecret)
		if status < 400 || status >= 500 || body["error"] == nil {
			t.Fatalf("got %d %v, want a 4xx OAuth error", status, body)
		}
	})
	t.Run("fail/json-body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(`{"grant_type":"client_credentials"}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(svcClient, svcSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("got %d, want 400", resp.StatusCode)
		}
	})
}

// active asks the introspection endpoint, as the gateway would.
func active(t testing.TB, ts *testServer, token string) bool {
	t.Helper()
	status, body := postForm(t, ts.Issuer+"/oauth2/introspect", url.Values{"token": {token}}, svcClient, svcSecret)
	if status != 200 {
		t.Fatalf("introspection: %d %v", status, body)
	}
	return body["active"] == true
}

func TestRefreshRotationAndReuse(t *testing.T) {
	ts := newTestServer(t, nil)
	tok1, cfg := exchange(t, ts, newBrowser(t, ts.Issuer))
	_, c1 := jwtParts(t, tok1.AccessToken)

	ts.Clock.Advance(time.Minute)
	tok2, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok1.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok2.RefreshToken == "" || tok2.RefreshToken == tok1.RefreshToken {
		t.Fatal("refresh did not rotate the refresh token")
	}
	_, c2 := jwtParts(t, tok2.AccessToken)
	if c2["jti"] == c1["jti"] {
		t.Error("a refreshed access token kept the old jti")
	}
	// A refresh keeps how the person authenticated.
	if c2["auth_time"] != c1["auth_time"] || !slices.Equal(strs(c2["amr"]), strs(c1["amr"])) || c2["grant"] != "authorization_code" {
		t.Errorf("refresh changed the authentication claims: %v -> %v", c1, c2)
	}
	if !active(t, ts, tok2.AccessToken) {
		t.Fatal("the new access token is not active")
	}
	if _, ok := tok2.Extra("id_token").(string); !ok {
		t.Error("refresh with openid scope returned no ID token")
	}

	// A client cannot add to amr at refresh: extra parameters are ignored.
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2.RefreshToken}, "client_id": {cliClient},
		"amr": {"mfa"}, "acr_values": {"urn:stepup:org:acme"}, "scope": {"openid offline_access"}}
	status, body := postForm(t, ts.Issuer+"/oauth2/token", form, "", "")
	if status != 200 {
		t.Fatalf("refresh with extra parameters: %d %v", status, body)
	}
	_, c3 := jwtParts(t, body["access_token"].(string))
	if !slices.Equal(strs(c3["amr"]), []string{"pwd"}) {
		t.Fatalf("refresh with amr=mfa gave amr %v", c3["amr"])
	}
	tok2 = &oauth2.Token{AccessToken: body["access_token"].(string), RefreshToken: body["refresh_token"].(string)}

	// Reusing the first refresh token revokes the whole family.
	if _, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok1.RefreshToken}).Token(); oauthErrorOf(err) != "invalid_grant" {
		t.Fatalf("reuse: got %v, want invalid_grant", err)
	}
	if active(t, ts, tok2.AccessToken) {
		t.Error("after reuse, the newest access token is still active")
	}
	if _, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok2.RefreshToken}).Token(); oauthErrorOf(err) != "invalid_grant" {
		t.Errorf("after reuse, the newest refresh token still works: %v", err)
	}
}

func TestNoRefreshTokenWithoutOfflineAccess(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")
	cfg.Scopes = []string{"openid"}
	v := oauth2.GenerateVerifier()
	back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	tok, err := cfg.Exchange(bg, back.Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "" {
		t.Fatal("a refresh token was issued without offline_access")
	}
}

func TestConcurrentRedemptionHasOneWinner(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")

	for _, kind := range []string{"code", "refresh"} {
		t.Run(kind, func(t *testing.T) {
			v := oauth2.GenerateVerifier()
			back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
			code := back.Query().Get("code")
			var rt string
			if kind == "refresh" {
				tok, err := cfg.Exchange(bg, code, oauth2.VerifierOption(v))
				if err != nil {
					t.Fatal(err)
				}
				rt = tok.RefreshToken
			}
			const n = 8
			var wg sync.WaitGroup
			results := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if kind == "code" {
						_, results[i] = cfg.Exchange(bg, code, oauth2.VerifierOption(v))
					} else {
						_, results[i] = cfg.TokenSource(bg, &oauth2.Token{RefreshToken: rt}).Token()
					}
				}()
			}
			close(start)
			wg.Wait()
			wins := 0
			for _, err := range results {
				switch {
				case err == nil:
					wins++
				case oauthErrorOf(err) != "invalid_grant" && oauthErrorOf(err) != "invalid_request":
					t.Errorf("loser got %v, want invalid_grant", err)
				}
			}
			if wins != 1 {
				t.Fatalf("%d of %d concurrent redemptions succeeded, want exactly 1", wins, n)
			}
		})
	}
}

func TestClientCredentials(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		cc := clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: ts.Issuer + "/oauth2/token",
			Scopes: []string{"access.read"}, AuthStyle: style}
		tok, err := cc.Token(bg)
		if style == oauth2.AuthStyleInParams {
			// The client registered client_secret_basic; fosite holds it to that.
			if oauthErrorOf(err) != "invalid_client" {
				t.Fatalf("client_secret_post for a basic client: got %v, want invalid_client", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if tok.RefreshToken != "" {
			t.Error("client_credentials returned a refresh token")
		}
		_, c := jwtParts(t, tok.AccessToken)
		if c["sub"] != svcClient || c["grant"] != "client_credentials" || !slices.Equal(strs(c["scp"]), []string{"access.read"}) {
			t.Errorf("claims = %v", c)
		}
	}
}

func TestPublicClientBasicAuthWithEmptySecret(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	v := oauth2.GenerateVerifier()
	back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	if _, err := cfg.Exchange(bg, back.Query().Get("code"), oauth2.VerifierOption(v)); err != nil {
		t.Fatalf("public client with HTTP Basic and an empty secret: %v", err)
	}
}

func TestConfidentialClientAndRevocation(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := webConfig(ts.Issuer)
	// A confidential client may skip PKCE (OpenID Connect Basic clients do).
	back := b.authorize(cfg.AuthCodeURL("state-0123456789"))
	tok, err := cfg.Exchange(bg, back.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	status, _ := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {tok.RefreshToken}}, webClient, webSecret)
	if status != 200 {
		t.Fatalf("revocation answered %d", status)
	}
	if _, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); oauthErrorOf(err) != "invalid_grant" {
		t.Fatalf("refresh after revocation: got %v, want invalid_grant", err)
	}
	if active(t, ts, tok.AccessToken) {
		t.Error("revoking the refresh token left its access token active")
	}
	// Revoking garbage is not an error (RFC 7009 §2.2).
	if status, _ := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {"garbage"}}, webClient, webSecret); status != 200 {
		t.Errorf("revoking an unknown token answered %d, want 200", status)
	}
}

func TestExpiredAccessToken(t *testing.T) {
	ts := newTestServer(t, nil)
	tok, cfg := exchange(t, ts, newBrowser(t, ts.Issuer))
	if !active(t, ts, tok.AccessToken) {
		t.Fatal("fresh token inactive")
	}
	ts.Clock.Advance(61 * time.Minute)
	if active(t, ts, tok.AccessToken) {
		t.Fatal("an expired access token introspects as active")
	}
	resp, err := cfg.Client(bg, &oauth2.Token{AccessToken: tok.AccessToken}).Get(ts.Issuer + "/oauth2/userinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("userinfo with an expired token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestPromptAndMaxAge(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b) // logs in
	cfg := cliConfig(ts.Issuer, "53682")
	ch := oauth2.S256ChallengeOption(oauth2.GenerateVerifier())

	// With a session, prompt=none succeeds silently.
	p := b.get(cfg.AuthCodeURL("state-0123456789", ch, oauth2.SetAuthURLParam("prompt", "none")))
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatalf("prompt=none with a session: %s", p.Header.Get("Location"))
	}
	// prompt=login asks for the password again, then completes.
	p = b.get(cfg.AuthCodeURL("state-0123456789", ch, oauth2.SetAuthURLParam("prompt", "login")))
	if !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Fatalf("prompt=login did not show the login page: %s", p.Request.URL)
	}
	if u := redirectOf(t, b.login(p, "alice", alicePassword)); u.Query().Get("code") == "" {
		t.Fatalf("after prompt=login: %s", u)
	}
	// max_age: a login older than that is redone.
	ts.Clock.Advance(10 * time.Minute)
	p = b.get(cfg.AuthCodeURL("state-0123456789", ch, oauth2.SetAuthURLParam("max_age", "60")))
	if !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Fatalf("max_age=60 after 10 minutes did not ask to log in: %s", p.Request.URL)
	}
	p = b.get(cfg.AuthCodeURL("state-0123456789", ch, oauth2.SetAuthURLParam("max_age", "3600")))
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatal("max_age=3600 after 10 minutes asked to log in")
	}
}

func TestLogout(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	cfg := webConfig(ts.Issuer)
	back := b.authorize(cfg.AuthCodeURL("state-0123456789"))
	tok, err := cfg.Exchange(bg, back.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	idToken := tok.Extra("id_token").(string)

	// An unregistered return address is refused.
	p := b.get(ts.Issuer + "/oauth2/logout?" + url.Values{"id_token_hint": {idToken}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode())
	if p.StatusCode != 400 {
		t.Fatalf("unregistered post_logout_redirect_uri: %d", p.StatusCode)
	}
	// Without a hint, the person is asked to confirm.
	p = b.get(ts.Issuer + "/oauth2/logout")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Do you want to sign out") {
		t.Fatalf("logout without a hint: %d %s", p.StatusCode, p.Body)
	}
	// With the hint, it happens at once and returns with state.
	p = b.get(ts.Issuer + "/oauth2/logout?" + url.Values{"id_token_hint": {idToken},
		"post_logout_redirect_uri": {"https://console.example.com/bye"}, "state": {"bye-state"}}.Encode())
	u := redirectOf(t, p)
	if u.Host != "console.example.com" || u.Query().Get("state") != "bye-state" {
		t.Fatalf("logout redirect = %s", u)
	}
	// The session is gone: the next authorization asks to log in.
	p = b.get(cfg.AuthCodeURL("state-0123456789"))
	if !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Fatalf("after logout, authorization did not ask to log in: %s", p.Request.URL)
	}
}

func TestIDTokenAlgorithmPerClient(t *testing.T) {
	for _, alg := range []string{"", "ES256", "RS256"} {
		t.Run("ok/"+alg, func(t *testing.T) {
			ts := newTestServer(t, func(c *authz.Config) { c.Clients[0].IDTokenAlg = alg })
			tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			raw := tok.Extra("id_token").(string)
			want := alg
			if want == "" {
				want = "RS256" // OpenID Connect's default
			}
			if h, _ := jwtParts(t, raw); h["alg"] != want {
				t.Fatalf("ID token alg = %v, want %s", h["alg"], want)
			}
			provider, err := oidc.NewProvider(bg, ts.Issuer)
			if err != nil {
				t.Fatal(err)
			}
			v := provider.Verifier(&oidc.Config{ClientID: cliClient, SupportedSigningAlgs: []string{want}})
			if _, err := v.Verify(bg, raw); err != nil {
				t.Fatal(err)
			}
		})
	}
}

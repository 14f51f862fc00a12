package authz_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// authorizeAt sends one authorization request in-process from remoteAddr:
// GET with the form in the query, or POST with it in the body.
func authorizeAt(h http.Handler, method string, form url.Values, remoteAddr string) *httptest.ResponseRecorder {
	var req *http.Request
	if method == http.MethodPost {
		req = httptest.NewRequest(method, "/oauth2/authorize", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, "/oauth2/authorize?"+form.Encode(), nil)
	}
	if remoteAddr != "" {
		req.RemoteAddr = remoteAddr
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// cliForm is a valid authorization request of the CLI's on a loopback port.
func cliForm(redirectURI string) url.Values {
	return url.Values{
		"response_type": {"code"}, "client_id": {cliClient}, "redirect_uri": {redirectURI},
		"scope": {"openid offline_access"}, "state": {"state-0123456789"},
		"code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"S256"},
	}
}

// storedPending returns the stored pending authorization that an
// anonymous request was sent to the login page with, raw and decoded.
func storedPending(t *testing.T, ts *testServer, rec *httptest.ResponseRecorder) ([]byte, url.Values) {
	t.Helper()
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("want a redirect to the login page, got %d: %s", rec.Code, rec.Body)
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil || loc.Path != "/login" || loc.Query().Get("challenge") == "" {
		t.Fatalf("want a redirect to the login page, got %q", rec.Header().Get("Location"))
	}
	raw, err := ts.Store.Get(t.Context(), "authorize", loc.Query().Get("challenge"))
	if err != nil {
		t.Fatalf("the pending authorization is not in the store: %v", err)
	}
	var p struct {
		Form url.Values `json:"form"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	return raw, p.Form
}

// TestRequestObjectWithStateInside is OpenID conformance's request object
// with the state only inside it: the answer is request_not_supported, not a
// complaint about the state fosite cannot see.
func TestRequestObjectWithStateInside(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.Config.Handler
	// alg none, claims {"state":"state-inside-0123456789","nonce":"n-0123456789"}
	const object = "eyJhbGciOiJub25lIn0.eyJzdGF0ZSI6InN0YXRlLWluc2lkZS0wMTIzNDU2Nzg5Iiwibm9uY2UiOiJuLTAxMjM0NTY3ODkifQ."
	base := func() url.Values {
		return url.Values{"response_type": {"code"}, "client_id": {webClient}, "scope": {"openid"},
			"redirect_uri": {"https://console.example.com/callback"}, "request": {object}}
	}
	for _, tc := range []struct {
		name      string
		method    string
		form      func() url.Values
		wantState string // in the error redirect; "" means none
		wantPage  bool   // an error page, not a redirect
	}{
		{"fail/state-only-inside", http.MethodGet, base, "", false},
		{"fail/state-only-inside-post", http.MethodPost, base, "", false},
		{"fail/request-uri-state-only-inside", http.MethodGet, func() url.Values {
			f := base()
			f.Del("request")
			f.Set("request_uri", "https://console.example.com/request.jwt")
			return f
		}, "", false},
		{"fail/short-state-outside", http.MethodGet, func() url.Values { f := base(); f.Set("state", "abc"); return f }, "abc", false},
		{"fail/state-outside", http.MethodGet, func() url.Values { f := base(); f.Set("state", "state-0123456789"); return f }, "state-0123456789", false},
		{"fail/untrusted-redirect", http.MethodGet, func() url.Values { f := base(); f.Set("redirect_uri", "https://evil.example/callback"); return f }, "", true},
		{"fail/unknown-client", http.MethodGet, func() url.Values { f := base(); f.Set("client_id", "nobody"); return f }, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := authorizeAt(h, tc.method, tc.form(), "")
			loc := rec.Header().Get("Location")
			if tc.wantPage {
				if loc != "" || rec.Code < 400 || !strings.Contains(rec.Header().Get("Content-Type"), "text/html") {
					t.Fatalf("want an error page, got %d Location=%q", rec.Code, loc)
				}
				return
			}
			u, err := url.Parse(loc)
			if rec.Code != http.StatusSeeOther || err != nil || u.Host != "console.example.com" {
				t.Fatalf("want an error redirect to the client, got %d Location=%q: %s", rec.Code, loc, rec.Body)
			}
			q := u.Query()
			if q.Get("error") != "request_not_supported" || q.Get("iss") != ts.Issuer || q.Get("error_description") == "" {
				t.Fatalf("redirect = %s, want error=request_not_supported with iss and a description", u)
			}
			if got, has := q.Get("state"), q.Has("state"); got != tc.wantState || has != (tc.wantState != "") {
				t.Fatalf("state in the redirect = %q (present %v), want %q", got, has, tc.wantState)
			}
		})
	}
}

// TestPendingAuthorizationKeepsOnlyKnownParameters: what an anonymous
// request leaves in the store for 30 minutes is the parameters the server
// reads, each within its limit, and nothing else.
func TestPendingAuthorizationKeepsOnlyKnownParameters(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.Config.Handler
	redirect := "http://127.0.0.1:53682/callback"

	t.Run("ok/unknown-parameters-dropped", func(t *testing.T) {
		f := cliForm(redirect)
		f.Set("nonce", "nonce-0123456789")
		f.Set("amr", "mfa")
		f.Set("acr_values", "urn:stepup:org:acme")
		f.Set("max_age", "300")
		f.Set("login_hint", "alice")
		f.Set("ui_locales", "en")
		f.Set("x_unknown", "drop me")
		f.Set("claims", `{"userinfo":{"name":null}}`)
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			_, stored := storedPending(t, ts, authorizeAt(h, method, f, ""))
			if stored.Has("x_unknown") || stored.Has("claims") {
				t.Errorf("%s: unknown parameters were stored: %v", method, stored)
			}
			for _, k := range []string{"response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
				"code_challenge", "code_challenge_method", "amr", "acr_values", "max_age", "login_hint", "ui_locales"} {
				if stored.Get(k) != f.Get(k) {
					t.Errorf("%s: stored %s = %q, want %q", method, k, stored.Get(k), f.Get(k))
				}
			}
		}
	})

	t.Run("ok/huge-form-stores-little", func(t *testing.T) {
		f := cliForm(redirect)
		for i := range 60 {
			f.Set("junk"+strings.Repeat("x", i), strings.Repeat("j", 900)) // 54 KiB of parameters nobody reads
		}
		f.Set("nonce", strings.Repeat("n", 500))
		f.Set("login_hint", strings.Repeat("l", 500))
		raw, _ := storedPending(t, ts, authorizeAt(h, http.MethodPost, f, ""))
		if len(raw) > 9<<10 {
			t.Fatalf("a %d-byte form left a %d-byte pending authorization", len(f.Encode()), len(raw))
		}
	})

	for _, tc := range []struct {
		name, param string
		size        int
		wantPage    bool
	}{
		{"fail/long-nonce", "nonce", 600, false},
		{"fail/long-state", "state", 600, false},
		{"fail/long-id-token-hint", "id_token_hint", 3000, false},
		{"fail/long-login-hint", "login_hint", 40 << 10, false},
		// Too long a redirect URI is never redirected to, not even to the
		// one registered.
		{"fail/long-redirect-uri", "redirect_uri", 2000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := cliForm(redirect)
			f.Set(tc.param, strings.Repeat("a", tc.size))
			if tc.param == "redirect_uri" {
				f.Set("redirect_uri", redirect+"?"+strings.Repeat("a", tc.size))
			}
			rec := authorizeAt(h, http.MethodPost, f, "")
			loc := rec.Header().Get("Location")
			if tc.wantPage {
				if loc != "" || rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.param) {
					t.Fatalf("want an error page naming %s, got %d Location=%q: %s", tc.param, rec.Code, loc, rec.Body)
				}
				return
			}
			u, _ := url.Parse(loc)
			q := u.Query()
			if rec.Code != http.StatusSeeOther || u.Host != "127.0.0.1:53682" || q.Get("error") != "invalid_request" ||
				!strings.Contains(q.Get("error_description"), tc.param) || q.Get("iss") != ts.Issuer {
				t.Fatalf("want invalid_request naming %s by redirect, got %d Location=%q", tc.param, rec.Code, loc)
			}
		})
	}
}

// TestPendingAuthorizationsLimitedPerAddress: one address cannot keep
// creating pending authorizations without end; others are not affected,
// and the limit lifts when its window ends.
func TestPendingAuthorizationsLimitedPerAddress(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.Config.Handler
	f := cliForm("http://127.0.0.1:53682/callback")
	const attacker = "203.0.113.7:4000"
	refused := 0
	var last *httptest.ResponseRecorder
	for i := 0; i < 5000 && refused == 0; i++ {
		last = authorizeAt(h, http.MethodGet, f, attacker)
		switch last.Code {
		case http.StatusSeeOther:
		case http.StatusTooManyRequests:
			refused = i
		default:
			t.Fatalf("request %d: %d %s", i, last.Code, last.Body)
		}
	}
	if refused == 0 {
		t.Fatal("5000 anonymous authorization requests from one address were all stored")
	}
	if last.Header().Get("Location") != "" || !strings.Contains(last.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(last.Body.String(), "Wait") || last.Header().Get("Retry-After") == "" {
		t.Fatalf("the refusal is not a page that says what to do: %v %s", last.Header(), last.Body)
	}
	t.Logf("refused after %d pending authorizations", refused)
	// Another address in the same IPv6 /64 counts as the same one.
	const v6a, v6b = "[2001:db8:1:2::1]:4000", "[2001:db8:1:2:ffff::9]:4000"
	for range refused {
		authorizeAt(h, http.MethodGet, f, v6a)
	}
	if rec := authorizeAt(h, http.MethodGet, f, v6b); rec.Code != http.StatusTooManyRequests {
		t.Errorf("another address in the same /64: %d, want 429", rec.Code)
	}
	if rec := authorizeAt(h, http.MethodGet, f, "198.51.100.1:4000"); rec.Code != http.StatusSeeOther {
		t.Errorf("another address: %d, want a redirect to the login page", rec.Code)
	}
	ts.Clock.Advance(time.Hour)
	if rec := authorizeAt(h, http.MethodGet, f, attacker); rec.Code != http.StatusSeeOther {
		t.Errorf("after the window: %d, want a redirect to the login page", rec.Code)
	}
}

// TestLoopbackRedirectURIsMatchExactly: RFC 8252 lets a loopback
// registration take any port, and nothing else may vary; a suspect
// redirect URI gets a page saying what is wrong, never a redirect.
func TestLoopbackRedirectURIsMatchExactly(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		c.Clients[0].RedirectURIs = append(c.Clients[0].RedirectURIs, "http://[::1]/callback")
	})
	h := ts.Config.Handler
	for _, tc := range []struct {
		name, uri string
		wantPage  string // a phrase on the error page; "" means accepted
	}{
		{"ok/port", "http://127.0.0.1:53682/callback", ""},
		{"ok/lowest-port", "http://127.0.0.1:1/callback", ""},
		{"ok/highest-port", "http://127.0.0.1:65535/callback", ""},
		{"ok/no-port", "http://127.0.0.1/callback", ""},
		{"ok/ipv6", "http://[::1]:8080/callback", ""},
		{"ok/ipv6-no-port", "http://[::1]/callback", ""},
		{"fail/userinfo", "http://evil.com@127.0.0.1:53682/callback", "user name"},
		{"fail/userinfo-password", "http://a:b@127.0.0.1/callback", "user name"},
		{"fail/ipv6-userinfo", "http://evil.com@[::1]:8080/callback", "user name"},
		{"fail/percent-encoded-path", "http://127.0.0.1:53682/call%62ack", "percent-encoding"},
		{"fail/percent-encoded-path-ipv6", "http://[::1]:53682/call%62ack", "percent-encoding"},
		{"fail/port-zero", "http://127.0.0.1:0/callback", "port"},
		{"fail/port-too-high", "http://127.0.0.1:65536/callback", "port"},
		{"fail/port-huge", "http://127.0.0.1:99999999999/callback", "port"},
		{"fail/port-leading-zero", "http://127.0.0.1:080/callback", "port"},
		{"fail/empty-port", "http://127.0.0.1:/callback", "port"},
		{"fail/fragment", "http://127.0.0.1:53682/callback#x", "fragment"},
		{"fail/uppercase-scheme", "HTTP://127.0.0.1:53682/callback", "http://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				rec := authorizeAt(h, method, cliForm(tc.uri), "")
				loc := rec.Header().Get("Location")
				if tc.wantPage == "" {
					if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?") {
						t.Fatalf("%s: want the login page, got %d Location=%q: %s", method, rec.Code, loc, rec.Body)
					}
					continue
				}
				if loc != "" || rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.wantPage) {
					t.Fatalf("%s: want an error page saying %q, got %d Location=%q: %s", method, tc.wantPage, rec.Code, loc, rec.Body)
				}
			}
		})
	}
}

// TestTokenRedirectURIMustEqualAuthorize: the token request's redirect_uri
// must be the authorization request's, character for character; another
// loopback port is not enough.
func TestTokenRedirectURIMustEqualAuthorize(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	for _, other := range []string{"http://127.0.0.1:53683/callback", "http://127.0.0.1/callback", "http://127.0.0.1:053682/callback"} {
		cfg := cliConfig(ts.Issuer, "53682")
		verifier := oauth2.GenerateVerifier()
		back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
		cfg.RedirectURL = other
		_, err := cfg.Exchange(t.Context(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
		if oauthErrorOf(err) != "invalid_grant" {
			t.Errorf("code from http://127.0.0.1:53682/callback redeemed with %s: %v, want invalid_grant", other, err)
		}
	}
}

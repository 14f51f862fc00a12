package authz_test

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

const upstreamSecret = "upstream-client-secret-0123456789"

// federation is a Stepup server (local) whose SSO provider "acme" is a
// second Stepup server (upstream), over real HTTP.
type federation struct {
	local, upstream *testServer
}

func newFederation(t *testing.T, trustMFA bool) *federation {
	t.Helper()
	return newFederationWith(t, trustMFA, nil)
}

// newFederationWith lets edit change the local server's provider.
func newFederationWith(t *testing.T, trustMFA bool, edit func(*authz.SSOProvider)) *federation {
	t.Helper()
	return federate(t, trustMFA, false, edit)
}

// federate sets up the two servers; with oneHost both are at 127.0.0.1,
// as two stepupd on a developer's machine are, and only the port tells
// them apart.
func federate(t *testing.T, trustMFA, oneHost bool, edit func(*authz.SSOProvider)) *federation {
	t.Helper()
	return federateWith(t, trustMFA, oneHost, edit, nil)
}

// federateWith lets local change the local server's config as well.
func federateWith(t *testing.T, trustMFA, oneHost bool, edit func(*authz.SSOProvider), local func(*authz.Config)) *federation {
	t.Helper()
	// The upstream gets a host name of its own, as it would in real life.
	toLocalhost := func(u string) string {
		if oneHost {
			return u
		}
		return strings.Replace(u, "127.0.0.1", "localhost", 1)
	}
	up := newTestServer(t, func(c *authz.Config) {
		c.Issuer = toLocalhost(c.Issuer)
		c.Clients = append(c.Clients, authz.Client{ID: "stepup", SecretHash: authz.HashClientSecret(upstreamSecret),
			// Loopback: the local server's port is any port (RFC 8252).
			RedirectURIs: []string{"http://127.0.0.1/sso/acme/callback"},
			GrantTypes:   []string{"authorization_code"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "email", "profile"}, TokenEndpointAuthMethod: "client_secret_basic"})
		// mallory, below, claims the local bob's address: the upstream's
		// own bob (emails are unique) has another.
		c.Users[1].Email = "bob@upstream.example"
		c.Users = append(c.Users,
			authz.User{ID: "up_eve", Username: "eve", Email: "eve@example.com", PasswordHash: hashOnce(), EmailVerified: true},
			authz.User{ID: "up_mallory", Username: "mallory", Email: "bob@example.com", PasswordHash: hashOnce(), EmailVerified: false})
	})
	up.Issuer = toLocalhost(up.Issuer)
	ls := newTestServer(t, func(c *authz.Config) {
		c.SSOProviders = []authz.SSOProvider{{ID: "acme", Issuer: up.Issuer, ClientID: "stepup", ClientSecret: upstreamSecret,
			TrustUpstreamMFA: trustMFA, MaxSessionAge: time.Hour}}
		if edit != nil {
			edit(&c.SSOProviders[0])
		}
		if local != nil {
			local(c)
		}
	})
	return &federation{local: ls, upstream: up}
}

// browser follows redirects within both servers.
func (f *federation) browser(t *testing.T) *browser {
	b := newBrowser(t, f.local.Issuer)
	b.client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if u := req.URL.String(); strings.HasPrefix(u, f.local.Issuer) || strings.HasPrefix(u, f.upstream.Issuer) {
			return nil
		}
		return http.ErrUseLastResponse
	}
	return b
}

var ssoLink = regexp.MustCompile(`href="(/sso/acme/start\?challenge=[^"]+)"`)

// viaUpstream logs in on the upstream's login page and follows everything
// back; p must be the upstream's login page.
func (f *federation) viaUpstream(t *testing.T, b *browser, p page, username string) page {
	t.Helper()
	if !strings.HasPrefix(p.Request.URL.String(), f.upstream.Issuer+"/login") {
		t.Fatalf("expected the upstream's login page, got %d at %s", p.StatusCode, p.Request.URL)
	}
	form := formValues(p)
	form.Set("username", username)
	form.Set("password", alicePassword)
	return b.post(f.upstream.Issuer+"/login", form)
}

func TestSSOLogin(t *testing.T) {
	f := newFederation(t, false)
	b := f.browser(t)
	cfg := cliConfig(f.local.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	m := ssoLink.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no 'Sign in with acme' on the login page: %s", p.Body)
	}
	p = f.viaUpstream(t, b, b.get(f.local.Issuer+htmlUnescape(m[1])), "alice")
	tok := tokensFrom(t, f.local, p, v)
	if got := amrOf(t, tok); !slices.Equal(got, []string{"sso:acme"}) {
		t.Fatalf("amr after an SSO login = %v", got)
	}
	provider, err := oidc.NewProvider(bg, f.local.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: cliClient}).Verify(bg, tok.Extra("id_token").(string))
	if err != nil || idt.Subject != "u_alice" {
		t.Fatalf("ID token: %v, sub %v", err, idt)
	}

	// The API and userinfo now know alice has used the provider.
	if _, _, me := call(t, "GET", f.local.Issuer+"/api/me", tok.AccessToken, nil); !slices.Equal(strs(me["sso_providers"]), []string{"acme"}) {
		t.Errorf("/api/me sso_providers = %v", me["sso_providers"])
	}
	if _, _, ui := call(t, "GET", f.local.Issuer+"/oauth2/userinfo", tok.AccessToken, nil); ui["sso_enabled"] != true {
		t.Errorf("userinfo sso_enabled = %v", ui["sso_enabled"])
	}

	// While the SSO session is young, refreshing works and keeps the amr.
	rt, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if got := amrOf(t, rt); !slices.Equal(got, []string{"sso:acme"}) {
		t.Fatalf("amr after refresh = %v", got)
	}
}

func TestSSOSessionExpiryOnRefresh(t *testing.T) {
	f := newFederation(t, false)
	b := f.browser(t)
	cfg := cliConfig(f.local.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	p = f.viaUpstream(t, b, b.get(f.local.Issuer+htmlUnescape(ssoLink.FindStringSubmatch(p.Body)[1])), "alice")
	tok := tokensFrom(t, f.local, p, v)
	f.local.Clock.Advance(2 * time.Hour) // past the provider's max_session_age of an hour
	_, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !asRetrieve(err, &re) || re.ErrorCode != "invalid_grant" || !strings.Contains(re.ErrorDescription, "SSO session has expired") {
		t.Fatalf("refresh after the SSO session lapsed: %v", err)
	}
}

// TestStepUpToSSO: a password session asked for amr=sso:acme goes through
// the provider only, and comes back with both.
func TestStepUpToSSO(t *testing.T) {
	f := newFederation(t, false)
	b := f.browser(t)
	exchange(t, f.local, b) // password session
	cfg := cliConfig(f.local.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "sso:acme")))
	tok := tokensFrom(t, f.local, f.viaUpstream(t, b, p, "alice"), v)
	if got := amrOf(t, tok); !slices.Equal(got, []string{"pwd", "sso:acme"}) {
		t.Fatalf("amr after SSO step-up = %v", got)
	}
	// An amr for a provider that does not exist is refused before login.
	p = b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "sso:nope")))
	if redirectOf(t, p).Query().Get("error") != "unmet_authentication_requirements" {
		t.Fatalf("amr=sso:nope: %s", p.Header.Get("Location"))
	}
}

func TestSSORefusals(t *testing.T) {
	f := newFederation(t, false)
	cfg := cliConfig(f.local.Issuer, "53682")
	start := func(b *browser) page {
		p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		return b.get(f.local.Issuer + htmlUnescape(ssoLink.FindStringSubmatch(p.Body)[1]))
	}
	t.Run("fail/no-local-account", func(t *testing.T) {
		b := f.browser(t)
		p := f.viaUpstream(t, b, start(b), "eve")
		if p.StatusCode != 401 || !strings.Contains(p.Body, "no account here for eve@example.com") {
			t.Fatalf("%d %s", p.StatusCode, p.Body)
		}
	})
	t.Run("fail/unverified-email", func(t *testing.T) {
		b := f.browser(t)
		p := f.viaUpstream(t, b, start(b), "mallory") // claims bob's address, unverified
		if p.StatusCode != 401 || !strings.Contains(p.Body, "did not vouch for an email address") {
			t.Fatalf("%d %s", p.StatusCode, p.Body)
		}
	})
	t.Run("fail/replayed-callback", func(t *testing.T) {
		b := f.browser(t)
		var callback string
		follow := b.client.CheckRedirect
		b.client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if strings.Contains(req.URL.Path, "/sso/acme/callback") && callback == "" {
				callback = req.URL.String()
			}
			return follow(req, via)
		}
		f.viaUpstream(t, b, start(b), "alice")
		if callback == "" {
			t.Fatal("never saw the callback")
		}
		if p := b.get(callback); p.StatusCode != 400 || !strings.Contains(p.Body, "expired") {
			t.Fatalf("replayed callback: %d %s", p.StatusCode, p.Body)
		}
	})
	t.Run("fail/finished-in-another-browser", func(t *testing.T) {
		attacker, victim := f.browser(t), f.browser(t)
		// The attacker starts, and hands the upstream's page to the victim.
		p := start(attacker)
		p = f.viaUpstream(t, victim, victim.get(p.Request.URL.String()), "alice")
		if p.StatusCode != 400 || !strings.Contains(p.Body, "started in another browser") {
			t.Fatalf("%d %s", p.StatusCode, p.Body)
		}
	})
	t.Run("fail/forged-state", func(t *testing.T) {
		b := f.browser(t)
		if p := b.get(f.local.Issuer + "/sso/acme/callback?code=x&state=forged"); p.StatusCode != 400 {
			t.Fatalf("forged state: %d", p.StatusCode)
		}
	})
}

// TestUpstreamMFATrust: the upstream's mfa counts only for a provider
// configured to be trusted with it.
func TestUpstreamMFATrust(t *testing.T) {
	for _, trust := range []bool{false, true} {
		f := newFederation(t, trust)
		// alice turns on MFA at the upstream.
		ub := newBrowser(t, f.upstream.Issuer)
		exchange(t, f.upstream, ub)
		secret, _ := enroll(t, f.upstream, ub)

		b := f.browser(t)
		cfg := cliConfig(f.local.Issuer, "53682")
		v := oauth2.GenerateVerifier()
		p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
		p = f.viaUpstream(t, b, b.get(f.local.Issuer+htmlUnescape(ssoLink.FindStringSubmatch(p.Body)[1])), "alice")
		// The upstream asks for its second factor.
		form := formValues(p)
		form.Set("code", code(t, secret, f.upstream.Clock.Now().Add(30*time.Second)))
		p = b.post(f.upstream.Issuer+"/login/otp", form)
		got := amrOf(t, tokensFrom(t, f.local, p, v))
		want := []string{"sso:acme"}
		if trust {
			want = []string{"sso:acme", "mfa"}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("trust_upstream_mfa=%v: amr %v, want %v", trust, got, want)
		}
	}
}

// TestSSOProvisioning: a provider with allowed_domains makes an account at
// the first login of a person it vouches for, and joins them to its
// organization; the next login finds the same account; an unverified
// address gets the clear refusal and no account.
func TestSSOProvisioning(t *testing.T) {
	f := newFederationWith(t, false, func(p *authz.SSOProvider) {
		p.AllowedDomains, p.JoinOrg = []string{"example.com"}, "other"
	})
	cfg := cliConfig(f.local.Issuer, "53682")
	login := func(username string) (page, string) {
		b := f.browser(t)
		v := oauth2.GenerateVerifier()
		p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
		return f.viaUpstream(t, b, b.get(f.local.Issuer+htmlUnescape(ssoLink.FindStringSubmatch(p.Body)[1])), username), v
	}
	subOf := func(p page, v string) string {
		_, c := jwtParts(t, tokensFrom(t, f.local, p, v).AccessToken)
		return c["sub"].(string)
	}
	// eve@example.com has no account here: she gets one, and joins other.
	first := subOf(login("eve"))
	if second := subOf(login("eve")); second != first {
		t.Fatalf("eve's second login is %s, her first %s", second, first)
	}
	svc := svcToken(t, f.local)
	if _, _, a := call(t, "GET", f.local.Issuer+"/api/orgs/other/access/"+first, svc, nil); a["member"] != true || a["role"] != "member" {
		t.Errorf("the provisioned account in other: %v", a)
	}
	// mallory's address is unverified upstream: no account.
	if p, _ := login("mallory"); p.StatusCode != 401 || !strings.Contains(p.Body, "did not vouch") {
		t.Fatalf("mallory: %d %s", p.StatusCode, p.Body)
	}
}

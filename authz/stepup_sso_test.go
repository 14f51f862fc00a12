package authz_test

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
)

// TestSSOStepUpKeepsFactors: a person signed in with a password and a code
// who is asked for sso:acme as well goes to the provider and comes back
// without being asked for the code again, and the session keeps pwd and
// otp beside the new sso:acme.
//
// Both servers are on one host too, where cookies cannot tell them apart
// by port: each names its cookies after its port, so the upstream's login
// leaves the local session alone.
func TestSSOStepUpKeepsFactors(t *testing.T) {
	for name, oneHost := range map[string]bool{"two-hosts": false, "one-host": true} {
		t.Run(name, func(t *testing.T) { ssoStepUpKeepsFactors(t, federate(t, false, oneHost, nil)) })
	}
}

func ssoStepUpKeepsFactors(t *testing.T, f *federation) {
	b := f.browser(t)
	exchange(t, f.local, b) // a password session
	secret, _ := enroll(t, f.local, b)
	cfg := cliConfig(f.local.Issuer, "53682")
	// Setting up the authenticator proved a code: mfa needs nothing more.
	_ = secret
	v := oauth2.GenerateVerifier()
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "mfa")))
	tok := tokensFrom(t, f.local, p, v)
	if got := amrOf(t, tok); !slices.Equal(got, []string{"otp", "pwd", "mfa"}) {
		t.Fatalf("amr before the SSO step-up = %v", got)
	}

	// The organization wants MFA and the provider.
	v = oauth2.GenerateVerifier()
	p = b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "mfa sso:acme")))
	back := f.viaUpstream(t, b, p, "alice")
	if strings.HasPrefix(back.Request.URL.Path, "/login") {
		t.Fatalf("after the provider the browser was asked again: %s", back.Request.URL)
	}
	tok = tokensFrom(t, f.local, back, v)
	got := amrOf(t, tok)
	slices.Sort(got)
	if want := []string{"mfa", "otp", "pwd", "sso:acme"}; !slices.Equal(got, want) {
		t.Fatalf("amr after the SSO step-up = %v, want %v", got, want)
	}
}

// TestChallengeStatesTheWholeRequirement: acme requires MFA and its
// provider; a token with mfa is told both in amr (RFC 9470: what the
// resource requires) and, in words, only what it lacks.
func TestChallengeStatesTheWholeRequirement(t *testing.T) {
	ts := newTestServer(t, nil)
	b, _ := loginAs(t, ts, "alice")
	enroll(t, ts, b)
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	tok := tokensFrom(t, ts, b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "mfa"))), v)
	status, h, body := call(t, "GET", ts.Issuer+"/api/orgs/acme", tok.AccessToken, nil)
	if status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), `amr="mfa sso:acme"`) || !slices.Equal(strs(body["amr"]), []string{"mfa", "sso:acme"}) {
		t.Fatalf("challenge for a token with mfa: %d %s %v", status, h.Get("WWW-Authenticate"), body)
	}
	if d := body["error_description"].(string); !strings.Contains(d, "Single sign-on") || strings.Contains(d, "Multi-factor") {
		t.Errorf("the description names %q, want only the missing SSO", d)
	}
}

// TestConsoleStepsUpToSSO: an organization page whose organization
// requires its provider sends the browser there and back, asking for
// nothing else (the step function, shared with the authorization
// endpoint).
func TestConsoleStepsUpToSSO(t *testing.T) {
	f := newFederation(t, false)
	b := f.browser(t)
	exchange(t, f.local, b)
	enroll(t, f.local, b) // acme requires MFA too
	p := b.get(f.local.Issuer + "/orgs/acme/settings/security")
	back := f.viaUpstream(t, b, p, "alice")
	if back.StatusCode != 200 || back.Request.URL.Path != "/orgs/acme/settings/security" || !strings.Contains(back.Body, "User security settings") {
		t.Fatalf("after the provider: %d at %s", back.StatusCode, back.Request.URL)
	}
}

// TestPhishingResistantRequirement: an organization that requires
// phishing-resistant MFA refuses a token with a code (amr phr in the
// challenge, named in words) and says so to resource servers; an owner
// may turn it on only with a passkey of her own.
func TestPhishingResistantRequirement(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) {
		withTeam(c)
		c.Orgs = append(c.Orgs, authz.Org{ID: "vault", Name: "Vault", PhishingResistant: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "owner"}, {UserID: "u_bob", Role: "member"}}})
	})
	b, _ := loginAs(t, ts, "alice")
	enroll(t, ts, b)
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	tok := tokensFrom(t, ts, b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("amr", "mfa"))), v)
	status, h, body := call(t, "GET", ts.Issuer+"/api/orgs/vault", tok.AccessToken, nil)
	if status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), `amr="phr"`) ||
		!strings.Contains(body["error_description"].(string), "Phishing-resistant multi-factor authentication (passkey)") {
		t.Fatalf("a token with a code at a phishing-resistant organization: %d %s %v", status, h.Get("WWW-Authenticate"), body)
	}
	svc, err := (&clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret,
		TokenURL: ts.Issuer + "/oauth2/token", Scopes: []string{"access.read"}}).Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, a := getJSON(t, ts.Issuer+"/api/orgs/vault/access/u_bob", svc.AccessToken); !slices.Contains(strs(a["requirements"].(map[string]any)["amr"]), "phr") {
		t.Errorf("access answer: %v", a)
	}
	if status, _, body := call(t, "PATCH", ts.Issuer+"/api/orgs/team/security", tok.AccessToken, map[string]any{"phishing_resistant": true}); status != 409 || body["error"] != "passkey_not_registered" {
		t.Fatalf("requiring a passkey without one: %d %v", status, body)
	}
	if _, _, body := call(t, "GET", ts.Issuer+"/api/orgs/team", tok.AccessToken, nil); body["phishing_resistant"] != false {
		t.Errorf("the refused change took effect: %v", body)
	}
}

package authz_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestPasskeysInChromium runs the whole passkey ceremony in Chromium with
// its virtual authenticator (a platform passkey that verifies the person):
// register one on My profile → Security; sign in with the password and the
// passkey; step up from a password-and-code login to phishing-resistant
// MFA (amr=phr) with the passkey alone; sign in with no password at all;
// and remove the passkey. The issuer is "localhost": WebAuthn refuses IP
// addresses as relying-party ids.
func TestPasskeysInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	ts := newTestServer(t, func(c *authz.Config) { c.Issuer = strings.Replace(c.Issuer, "127.0.0.1", "localhost", 1) })
	ts.Issuer = strings.Replace(ts.Issuer, "127.0.0.1", "localhost", 1)
	// alice also has an authenticator app, set up over plain HTTP.
	hb, _ := loginAs(t, ts, "alice")
	secret, recovery := enroll(t, ts, hb)
	received, port := callbackServer(t)
	cfg := cliConfig(ts.Issuer, port)

	b := newChrome(t, ctx, chromium, ts.Issuer)
	b.unauthorized = append(b.unauthorized, "/login/passkey")
	if _, err := chromedp.Call(b.ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(b.ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
	}}); err != nil {
		t.Fatal(err)
	}
	// Codes work once: the next step's code, then a recovery code.
	codes := []string{code(t, secret, ts.Clock.Now().Add(30*time.Second)), recovery[0]}
	nextCode := func() string { c := codes[0]; codes = codes[1:]; return c }
	// authorize starts a CLI login and returns what its token says.
	authorize := func(what string, amr string, steps func()) []string {
		t.Helper()
		verifier, state := oauth2.GenerateVerifier(), rand.Text()
		opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
		if amr != "" {
			opts = append(opts, oauth2.SetAuthURLParam("amr", amr))
		}
		b.do(what+": starting", chromedp.Navigate(cfg.AuthCodeURL(state, opts...)))
		var q = make(map[string][]string)
		steps()
		select {
		case q = <-received:
		case <-ctx.Done():
			t.Fatalf("%s: the callback got no request", what)
		}
		if q["state"][0] != state || len(q["code"]) == 0 {
			t.Fatalf("%s: callback %v", what, q)
		}
		// The script's navigation lands before the next one starts.
		for !strings.HasPrefix(chromeRun(b, what+": reading the location", chromedp.Location()), cfg.RedirectURL) {
			if ctx.Err() != nil {
				t.Fatalf("%s: the browser never showed the callback", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
		tok, err := cfg.Exchange(ctx, q["code"][0], oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("%s: exchange: %v", what, err)
		}
		got := mfaAMR(t, tok)
		slices.Sort(got)
		return got
	}
	signOut := func() {
		t.Helper()
		b.open(ts.Issuer+"/", "/", "the home page")
		b.toggle("DisclosureTriangle", "User menu")
		b.press("button", "Sign out", "/oauth2/logout", http.StatusOK)
	}

	// 1. Sign in (password, code) and register a passkey.
	b.open(ts.Issuer+"/account/security", "/login", "the security page without a session")
	b.fill("Username", "alice")
	b.fill("Password", alicePassword)
	b.press("button", "Sign in", "/login/otp", http.StatusOK)
	b.fill("Authentication code", nextCode())
	b.press("button", "Verify", "/account/security", http.StatusOK)
	b.fill("Name for the new passkey", "Laptop")
	b.press("button", "Add a passkey", "/account/security", http.StatusOK)
	if !b.has("button", "Remove the passkey Laptop") {
		t.Fatalf("the new passkey is not listed: %s", b.text("the page", chromedp.CSS("main")))
	}
	b.checkReports("registering")
	b.checkAccessible("the security page with a passkey", []string{"passkey-name"})
	b.screenshot("passkeys.png")

	// 2. Password, then the passkey instead of the code.
	signOut()
	got := authorize("password and passkey", "", func() {
		b.fill("Username", "alice")
		b.fill("Password", alicePassword)
		b.press("button", "Sign in", "/login/otp", http.StatusOK)
		b.press("link", "Use a passkey instead", "/login/passkey", http.StatusOK)
		b.checkLandmarks("the passkey page", false)
		b.toggle("button", "Use passkey")
	})
	if want := []string{"mfa", "phr", "pwd", "swk", "user"}; !slices.Equal(got, want) {
		t.Errorf("password and passkey: amr %v, want %v", got, want)
	}

	// 3. Step up: a password-and-code session asked for phr uses the
	// passkey and nothing else.
	signOut()
	got = authorize("password and code", "", func() {
		b.fill("Username", "alice")
		b.fill("Password", alicePassword)
		b.press("button", "Sign in", "/login/otp", http.StatusOK)
		b.fill("Authentication code", nextCode())
		b.toggle("button", "Verify")
	})
	if want := []string{"mfa", "otp", "pwd"}; !slices.Equal(got, want) {
		t.Errorf("password and code: amr %v, want %v", got, want)
	}
	got = authorize("the step-up to phr", "phr", func() {
		if loc := chromeRun(b, "reading the location", chromedp.Location()); !strings.Contains(loc, "/login/passkey?") {
			t.Fatalf("the step-up to phr went to %s, want the passkey page", loc)
		}
		if why := b.text("the reason", chromedp.CSS("#why")); why != "Stepup CLI asks for phishing-resistant multi-factor authentication (a passkey)." {
			t.Errorf("the passkey page says %q", why)
		}
		b.toggle("button", "Use passkey")
	})
	if !slices.Contains(got, "phr") || !slices.Contains(got, "otp") || !slices.Contains(got, "pwd") {
		t.Errorf("after the step-up: amr %v, want phr beside otp and pwd", got)
	}

	// 4. No password at all: the passkey verified her.
	signOut()
	got = authorize("passwordless", "phr", func() {
		b.toggle("button", "Sign in with a passkey")
	})
	if want := []string{"mfa", "phr", "swk", "user"}; !slices.Equal(got, want) {
		t.Errorf("passwordless: amr %v, want %v", got, want)
	}

	// 5. Remove it.
	b.open(ts.Issuer+"/account/security", "/account/security", "the security page")
	b.press("button", "Remove the passkey Laptop", "/account/security/passkeys/remove", http.StatusOK)
	if b.has("button", "Remove the passkey Laptop") || !strings.Contains(b.text("the notice", chromedp.CSS("[role=status]")), "removed") {
		t.Error("the passkey is still listed after Remove")
	}
	b.checkReports("removing")
}

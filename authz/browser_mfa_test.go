package authz_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestMFAEnrollmentInChromium turns on MFA through the account pages in a
// headless Chromium and then signs in with both factors in a second browser
// with its own profile, the way a person does with their phone's
// authenticator app: the CLI listens on a loopback port; the first login
// needs only the password; /account/security offers the setup, shows a QR
// code and the secret, and takes a code; a later login asks for the
// password and then the code, says so when the code is wrong, and ends at
// the CLI's callback with amr otp+pwd+mfa. A real browser checks what the
// plain-HTTP MFA tests cannot: that the QR code's data: URL passes the
// Content Security Policy and decodes into an image, that the secret can be
// selected, that form-action lets the code form's redirects reach the
// loopback callback, and that every field has a label.
func TestMFAEnrollmentInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	ts := newTestServer(t, nil)
	received, port := callbackServer(t)
	cfg := cliConfig(ts.Issuer, port)

	// 1, 2. The first login, with the password only.
	b1 := newChrome(t, ctx, chromium, ts.Issuer)
	verifier, state := oauth2.GenerateVerifier(), rand.Text()
	b1.open(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "/login", "the first authorization")
	b1.checkAccessible("login page", nil)
	b1.checkReports("login page")
	b1.do("signing in", chromedp.SendKeys(chromedp.ID("username"), "alice"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	q := b1.submitToCallback("the password (no MFA yet)", cfg.RedirectURL, received,
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)))
	checkCallback(t, q, state, ts.Issuer)
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the first code: %v", err)
	}
	if got := mfaAMR(t, tok); !slices.Equal(got, []string{"pwd"}) {
		t.Fatalf("before MFA, amr = %q, want [pwd]", got)
	}

	// 3. The account page, with MFA off.
	b1.open(ts.Issuer+"/account/security", "/account/security", "the account page")
	if h := b1.text("the account page", chromedp.CSS(`main h2`)); h != "Multi-factor authentication is off" {
		t.Fatalf("account page heading = %q, want %q", h, "Multi-factor authentication is off")
	}
	b1.checkAccessible("account page (MFA off)", nil)
	b1.checkReports("account page (MFA off)")
	b1.click("Set up application", "/account/security", http.StatusOK)

	// 4. The setup page: QR code, secret, code field.
	type qrReport struct {
		Count    int
		Alt, Src string
		Width    int
	}
	qr := chromeRun(b1, "inspecting the QR code", chromedp.Evaluate[qrReport](`(() => {
	const imgs = document.querySelectorAll('main img');
	const img = imgs[0];
	return img ? {Count: imgs.length, Alt: img.getAttribute('alt') || '', Src: img.getAttribute('src').slice(0, 40), Width: img.width}
		: {Count: 0, Alt: '', Src: '', Width: 0};
})()`))
	if qr.Count != 1 {
		t.Fatalf("setup page has %d images, want the one QR code", qr.Count)
	}
	if strings.TrimSpace(qr.Alt) == "" {
		t.Errorf("the QR code has no alt text")
	}
	if !strings.HasPrefix(qr.Src, "data:image/png;base64,") {
		t.Errorf("QR code src starts %q, want a data:image/png URL", qr.Src)
	}
	// The image decoded: img-src allows data:, and the PNG is valid.
	if _, err := chromedp.Run(b1.ctx, chromedp.Poll[bool](
		`(() => { const img = document.querySelector('main img'); return img.complete && img.naturalWidth === 200; })()`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		imgState := chromeRun(b1, "reading the QR image's state", chromedp.Evaluate[string](
			`(() => { const img = document.querySelector('main img'); return 'complete=' + img.complete + ' naturalWidth=' + img.naturalWidth + ' naturalHeight=' + img.naturalHeight; })()`))
		t.Errorf("the QR code did not decode into a 200-pixel image (%s): %v", imgState, err)
	}

	secret := strings.TrimSpace(b1.text("reading the secret", chromedp.CSS("#totp-secret")))
	if !regexp.MustCompile(`^[A-Z2-7]{16,}$`).MatchString(secret) {
		t.Fatalf("the secret on the page is %q, want base32", secret)
	}
	if userSelect := chromeRun(b1, "reading the secret's user-select", chromedp.Evaluate[string](
		`getComputedStyle(document.getElementById('totp-secret')).userSelect`)); userSelect == "none" {
		t.Errorf("the secret has user-select: none; a person cannot copy it")
	} else {
		t.Logf("the secret's user-select is %q", userSelect)
	}
	b1.screenshot("stepup-mfa-setup.png")

	// A person copying the secret clicks it: with user-select: all, one
	// click selects all of it.
	b1.do("clicking the secret", chromedp.Click(chromedp.ID("totp-secret")))
	if sel := chromeRun(b1, "reading the selection", chromedp.Evaluate[string](`window.getSelection().toString()`)); strings.TrimSpace(sel) != secret {
		t.Errorf("after a click on the secret the selection is %q, want the whole secret %q", sel, secret)
	}
	if link := chromeRun(b1, "reading the setup link", chromedp.TextContent(chromedp.ID("otpauth-url"))); !strings.HasPrefix(link, "otpauth://totp/") || !strings.Contains(link, "secret="+secret) {
		t.Errorf("setup link %q does not carry the secret %q", link, secret)
	}
	if l := b1.text("the code field's label", chromedp.CSS(`label[for="code"]`)); l != "Code from the app" {
		t.Errorf("the code field's label is %q, want %q", l, "Code from the app")
	}
	b1.checkAccessible("setup page", []string{"code"})
	b1.checkReports("setup page")

	enrollCode, err := totp.GenerateCode(secret, ts.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	b1.do("typing the code", chromedp.SendKeys(chromedp.ID("code"), enrollCode))
	b1.click("Verify & save", "/account/security/verify", http.StatusOK)

	// 5. MFA is on; the recovery codes are shown once.
	if h := b1.text("the account page after setup", chromedp.CSS(`#on-h`)); h != "Multi-factor authentication is on" {
		t.Errorf("after Verify & save the heading is %q", h)
	}
	codes := chromeRun(b1, "reading the recovery codes", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('ul.codes li')].map(li => li.textContent.trim())`))
	recoveryCode := regexp.MustCompile(`^[a-z0-9]{5}-[a-z0-9]{5}$`)
	distinct := map[string]bool{}
	for _, c := range codes {
		distinct[c] = true
		if !recoveryCode.MatchString(c) {
			t.Errorf("recovery code %q has the wrong form", c)
		}
	}
	if len(codes) != 10 || len(distinct) != 10 {
		t.Errorf("the page shows %d recovery codes (%d distinct), want 10: %q", len(codes), len(distinct), codes)
	}
	if n := b1.text("the notice", chromedp.CSS(`[role="status"]`)); n != "Multi-factor authentication is on." {
		t.Errorf("role=status notice = %q, want %q", n, "Multi-factor authentication is on.")
	}
	if n := chromeRun(b1, "counting alerts", chromedp.Evaluate[int](`document.querySelectorAll('[role="alert"]').length`)); n != 0 {
		t.Errorf("the page after Verify & save has %d role=alert elements", n)
	}
	b1.checkAccessible("account page (MFA on)", []string{"regen-code", "disable-code"})
	b1.checkReports("account page (MFA on)")

	// 6. A new login, in a browser with no session: password, then code.
	b2 := newChrome(t, ctx, chromium, ts.Issuer)
	verifier, state = oauth2.GenerateVerifier(), rand.Text()
	b2.open(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "/login", "the second authorization (a new profile, no session)")
	b2.checkReports("login page (second browser)")
	b2.do("signing in", chromedp.SendKeys(chromedp.ID("username"), "alice"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	b2.click("Sign in", "/login/otp", http.StatusOK)
	select {
	case q := <-received:
		t.Fatalf("with MFA on, the password alone reached the callback: %v", q)
	default:
	}
	if l := b2.text("the code field's label", chromedp.CSS(`label[for="code"]`)); l == "" {
		t.Errorf("the code field on the otp page has no label")
	}
	b2.checkAccessible("otp page", []string{"code"})
	b2.checkReports("otp page")
	b2.screenshot("stepup-mfa-otp.png")

	// A wrong code: the same page, with the error announced.
	b2.do("typing a wrong code", chromedp.SendKeys(chromedp.ID("code"), wrongTOTP(t, secret, ts.Clock.Now())))
	b2.click("Verify", "/login/otp", http.StatusUnauthorized)
	if alert := b2.text("the alert after a wrong code", chromedp.CSS(`[role="alert"]`)); !strings.Contains(alert, "That code is not right") {
		t.Errorf("after a wrong code, role=alert says %q, want %q", alert, "That code is not right")
	}
	b2.checkAccessible("otp page after a wrong code", []string{"code"})
	b2.checkReports("otp page after a wrong code")

	// The enrollment used the current step; the next one is within the
	// accepted skew. The server clock must stay: fosite compares auth_time
	// with the wall clock.
	next, err := totp.GenerateCode(secret, ts.Clock.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b2.do("typing the right code", chromedp.Clear(chromedp.ID("code")), chromedp.SendKeys(chromedp.ID("code"), next))
	q = b2.submitToCallback("the right code", cfg.RedirectURL, received,
		chromedp.Click(chromedp.Search(`//button[normalize-space()='Verify']`)))
	checkCallback(t, q, state, ts.Issuer)
	tok, err = cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the code after MFA: %v", err)
	}
	if got := mfaAMR(t, tok); !slices.Equal(got, []string{"otp", "pwd", "mfa"}) {
		t.Errorf("after password and code, amr = %q, want [otp pwd mfa]", got)
	}
}

// mfaAMR is the amr claim of an access token.
func mfaAMR(t *testing.T, tok *oauth2.Token) []string {
	t.Helper()
	_, c := jwtParts(t, tok.AccessToken)
	if c["amr"] == nil {
		return nil
	}
	return strs(c["amr"])
}

// wrongTOTP returns a 6-digit code that no step near now accepts.
func wrongTOTP(t *testing.T, secret string, now time.Time) string {
	t.Helper()
	var near []string
	for d := -2; d <= 3; d++ {
		c, err := totp.GenerateCode(secret, now.Add(time.Duration(d)*30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		near = append(near, c)
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", i*111111%1000000)
		if !slices.Contains(near, c) {
			return c
		}
	}
}

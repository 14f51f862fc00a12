package authz_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

func loginPage(t *testing.T, ts *testServer, b *browser) page {
	t.Helper()
	cfg := cliConfig(ts.Issuer, "53682")
	p := b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if !strings.HasPrefix(p.Request.URL.Path, "/login") {
		t.Fatalf("no login page: %s", p.Request.URL)
	}
	return p
}

func TestLoginThrottling(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) { c.MaxFailuresPerAccount, c.MaxFailuresPerAddress = 3, 5 })
	b := newBrowser(t, ts.Issuer)
	p := loginPage(t, ts, b)
	for i := range 3 {
		if r := b.login(p, "alice", "wrong"); r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, "Incorrect username or password.") {
			t.Fatalf("attempt %d: %d", i+1, r.StatusCode)
		}
	}
	// The account is locked for the window, even with the right password.
	r := b.login(p, "alice", alicePassword)
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(r.Body, "Too many failed sign-in attempts") {
		t.Fatalf("after 3 failures, the right password: %d", r.StatusCode)
	}
	// Another account from the same address still works, until the
	// address has failed too often.
	if r := b.login(p, "bob", alicePassword); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("bob from the same address: %d", r.StatusCode)
	}
	b2 := newBrowser(t, ts.Issuer)
	p2 := loginPage(t, ts, b2)
	for range 2 {
		b2.login(p2, "nobody", "wrong")
	}
	if r := b2.login(p2, "bob", alicePassword); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after 5 failures from one address: %d, want 429", r.StatusCode)
	}
	// The window passes.
	ts.Clock.Advance(16 * time.Minute)
	b3 := newBrowser(t, ts.Issuer)
	if r := b3.login(loginPage(t, ts, b3), "alice", alicePassword); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the window: %d", r.StatusCode)
	}
}

func TestLoginFormCSRFAndCookies(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	p := loginPage(t, ts, b)
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		if p.Header.Get(h) == "" {
			t.Errorf("login page without %s", h)
		}
	}
	if csp := p.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP = %q", csp)
	}
	form := formValues(p)
	form.Set("username", "alice")
	form.Set("password", alicePassword)

	bad := url.Values{}
	for k, v := range form {
		bad[k] = v
	}
	bad.Set("csrf_token", "forged")
	if r := b.post(ts.Issuer+"/login", bad); r.StatusCode != http.StatusForbidden {
		t.Fatalf("forged CSRF token: %d, want 403", r.StatusCode)
	}
	// The right token from a browser without the cookie fails too.
	if r := newBrowser(t, ts.Issuer).post(ts.Issuer+"/login", form); r.StatusCode != http.StatusForbidden {
		t.Fatalf("token without its cookie: %d, want 403", r.StatusCode)
	}

	noFollow := *b.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.PostForm(ts.Issuer+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "stepup_session_"+port(t, ts.Issuer) {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Secure {
		t.Fatalf("session cookie on an http issuer = %+v", session)
	}
}

func TestSecureCookiesOnHTTPSIssuer(t *testing.T) {
	ts := newTestServer(t, nil)
	// The same server configured with an https issuer (as behind a TLS
	// proxy) marks its cookies Secure with the __Host- prefix.
	srv, err := authz.New(func() authz.Config {
		c := baseConfig(ts.Store, ts.Clock.Now)
		c.Issuer = "https://id.example.com"
		return c
	}())
	if err != nil {
		t.Fatal(err)
	}
	cfg := cliConfig("https://id.example.com", "53682")
	rec := serve(srv.Handler(), http.MethodGet, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), nil)
	rec = serve(srv.Handler(), http.MethodGet, rec.Header().Get("Location"), nil)
	var csrf *http.Cookie
	for _, c := range rec.Result().Cookies() {
		csrf = c
	}
	if csrf == nil || csrf.Name != "__Host-stepup_csrf" || !csrf.Secure || !csrf.HttpOnly || csrf.Path != "/" {
		t.Fatalf("cookie on an https issuer = %+v", csrf)
	}
}

// TestAuthorizeByPOSTAndRequestObjects covers two things OpenID Connect
// conformance sends: the authorization request as a form POST, and a
// request object, which Stepup does not support and says so.
func TestAuthorizeByPOSTAndRequestObjects(t *testing.T) {
	ts := newTestServer(t, nil)
	b := newBrowser(t, ts.Issuer)
	exchange(t, ts, b) // logged in
	cfg := webConfig(ts.Issuer)
	u, _ := url.Parse(cfg.AuthCodeURL("state-0123456789"))
	p := b.post(ts.Issuer+"/oauth2/authorize", u.Query())
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatalf("POST to the authorization endpoint: %s", p.Header.Get("Location"))
	}
	q := u.Query()
	q.Set("request", "eyJhbGciOiJub25lIn0.eyJzdGF0ZSI6IngifQ.")
	p = b.get(ts.Issuer + "/oauth2/authorize?" + q.Encode())
	back := redirectOf(t, p)
	if e := back.Query().Get("error"); e != "request_not_supported" && e != "invalid_request_object" {
		t.Fatalf("request object: %s", back)
	}
}

// TestLoginThrottleCannotLockTheOwnerOut: wrong passwords from one address
// lock out that address, not the owner elsewhere; a guesser with many
// addresses slows the account down for strangers, while the owner's own
// browser signs in at once; and the waits are said in words.
func TestLoginThrottleCannotLockTheOwnerOut(t *testing.T) {
	ts := newTestServer(t, func(c *authz.Config) { c.MaxFailuresPerAccount, c.MaxFailuresPerAddress = 3, 50 })

	// The owner has signed in from their laptop before.
	laptop := newBrowser(t, ts.Issuer).from("203.0.113.7")
	if r := laptop.login(loginPage(t, ts, laptop), "alice", alicePassword); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner's first sign-in: %d", r.StatusCode)
	}

	attacker := newBrowser(t, ts.Issuer).from("198.51.100.1")
	p := loginPage(t, ts, attacker)
	for i := range 3 {
		if r := attacker.login(p, "alice", "wrong"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i+1, r.StatusCode)
		}
	}
	r := attacker.login(p, "alice", alicePassword)
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(r.Body, "Wait 15 minutes and try again.") {
		t.Fatalf("the guesser's address after 3 failures: %d %s", r.StatusCode, r.Body)
	}
	// The owner, from a new browser at another address, is not locked out.
	phone := newBrowser(t, ts.Issuer).from("192.0.2.44")
	if r := phone.login(loginPage(t, ts, phone), "alice", alicePassword); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner from another address: %d %s", r.StatusCode, r.Body)
	}

	// Now a guesser with many addresses: 3 tries from each of 4, past the
	// account-wide threshold (4 × 3).
	for n := range 4 {
		b := newBrowser(t, ts.Issuer).from("198.51.100." + string(rune('2'+n)))
		pg := loginPage(t, ts, b)
		for range 3 {
			b.login(pg, "alice", "wrong")
		}
	}
	// A stranger keeps failing, a slot at a time: the test clock jumps
	// past each slot, so the slots grow to their cap of a minute.
	var jumped time.Duration
	for i := range 6 {
		ts.Clock.Advance(61 * time.Second)
		jumped += 61 * time.Second
		b := newBrowser(t, ts.Issuer).from(fmt.Sprintf("198.51.100.%d", 20+i))
		if r := b.login(loginPage(t, ts, b), "alice", "wrong"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("an attempt in a fresh slot: %d %s", r.StatusCode, r.Body)
		}
	}
	stranger := newBrowser(t, ts.Issuer).from("198.51.100.9")
	sp := loginPage(t, ts, stranger)
	// Now a second attempt within the same minute-long slot is refused.
	r = stranger.login(sp, "alice", "wrong")
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(r.Body, "slowed down") || !strings.Contains(r.Body, "Wait up to 1 minute and try again") {
		t.Fatalf("a second attempt in the same slot: %d %s", r.StatusCode, r.Body)
	}
	// fosite refuses an auth_time more than 5 s ahead of the real clock:
	// back to it for the logins below. The slot, taken at the jumped time,
	// is still held.
	ts.Clock.Advance(-jumped)
	// ...while the owner's laptop signs in at once.
	lp := laptop.get(cliConfig(ts.Issuer, "53682").AuthCodeURL("state-0123456789",
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("prompt", "login")))
	if r := laptop.login(lp, "alice", alicePassword); r.StatusCode != http.StatusSeeOther || redirectOf(t, r).Query().Get("code") == "" {
		t.Fatalf("the owner's known browser during the attack: %d %s", r.StatusCode, r.Body)
	}
	// A made-up device cookie is no pass.
	forged := newBrowser(t, ts.Issuer).from("198.51.100.10")
	u, _ := url.Parse(ts.Issuer)
	forged.client.Jar.SetCookies(u, []*http.Cookie{{Name: "stepup_device_" + port(t, ts.Issuer), Value: strings.Repeat("A", 22) + "." + strings.Repeat("A", 43)}})
	fp := loginPage(t, ts, forged)
	if r := forged.login(fp, "alice", "wrong"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a forged device cookie during the attack: %d", r.StatusCode)
	}
}

// TestExpiredSessionSaysSo: a browser whose session ended is told why it
// must sign in again; a browser that never had one is not.
func TestExpiredSessionSaysSo(t *testing.T) {
	ts := newTestServer(t, nil)
	const note = "Your session has ended: it expired, or was signed out elsewhere."
	cfg := cliConfig(ts.Issuer, "53682")
	start := cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	if p := newBrowser(t, ts.Issuer).get(start); p.Request.URL.Path != "/login" || strings.Contains(p.Body, note) {
		t.Fatalf("a new browser: %s, note shown: %v", p.Request.URL, strings.Contains(p.Body, note))
	}
	b, _ := loginAs(t, ts, "alice")
	ts.Clock.Advance(25 * time.Hour)
	defer ts.Clock.Advance(-25 * time.Hour)
	if p := b.get(start); p.Request.URL.Path != "/login" || !strings.Contains(p.Body, note) {
		t.Fatalf("an expired session: %s without the note: %s", p.Request.URL, p.Body)
	}
}

// port is the issuer's port, which names its cookies on plain http.
func port(t *testing.T, issuer string) string {
	t.Helper()
	u, err := url.Parse(issuer)
	if err != nil || u.Port() == "" {
		t.Fatalf("issuer %q has no port", issuer)
	}
	return u.Port()
}

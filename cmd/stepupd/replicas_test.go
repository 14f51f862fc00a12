package main

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// webPage is one page a cookie-keeping client landed on.
type webPage struct {
	url    *url.URL
	status int
	body   string
	hidden url.Values
}

var hiddenField = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// webClient is a browser without JavaScript: it keeps cookies, follows
// redirects within the server, and stops at the loopback callback.
type webClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newWebClient(t *testing.T, base string) *webClient {
	jar, _ := cookiejar.New(nil)
	return &webClient{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == "/callback" {
			return http.ErrUseLastResponse
		}
		return nil
	}}}
}

func (w *webClient) read(resp *http.Response, err error) webPage {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := webPage{url: resp.Request.URL, status: resp.StatusCode, body: string(b), hidden: url.Values{}}
	if loc := resp.Header.Get("Location"); loc != "" {
		p.url, _ = url.Parse(loc)
	}
	for _, m := range hiddenField.FindAllStringSubmatch(p.body, -1) {
		p.hidden.Set(m[1], html.UnescapeString(m[2]))
	}
	return p
}

func (w *webClient) get(u string) webPage { return w.read(w.c.Get(u)) }

// submit posts the page's hidden fields plus extra to path on this client's
// server.
func (w *webClient) submit(p webPage, path string, extra url.Values) webPage {
	form := url.Values{}
	for k, v := range p.hidden {
		form[k] = v
	}
	for k, v := range extra {
		form[k] = v
	}
	return w.read(w.c.PostForm(w.base+path, form))
}

var totpSecret = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)

// TestTOTPCodeOnceAcrossReplicas: a second-factor code accepted by one
// stepupd process is refused by another sharing the same Redis.
func TestTOTPCodeOnceAcrossReplicas(t *testing.T) {
	redisAddr := testenv.StartRedis(t)
	a := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	b := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfgFile := filepath.Join(t.TempDir(), "stepup.yaml")
	err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
issuer: http://%s
store: redis://%s/0
secret: replicas-share-this-secret
clients:
  - id: stepup-cli
    public: true
    redirect_uris: ["http://127.0.0.1/callback"]
    scopes: [openid, offline_access]
users:
  - {id: u_alice, username: alice, email: alice@example.com, password: alice-password-1}
`, a, redisAddr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	start(t, nil, "--config", cfgFile, "--addr", a)
	start(t, nil, "--config", cfgFile, "--addr", b)
	waitReady(t, "http://"+a)
	waitReady(t, "http://"+b)
	login := url.Values{"username": {"alice"}, "password": {"alice-password-1"}}

	// Alice turns MFA on through replica A's account page.
	web := newWebClient(t, "http://"+a)
	p := web.submit(web.get(web.base+"/account/security"), "/login", login)
	if !strings.Contains(p.body, "Set up application") {
		t.Fatalf("account page after login: %d %s", p.status, p.body)
	}
	p = web.submit(p, "/account/security/setup", nil)
	m := totpSecret.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no secret on the setup page: %s", p.body)
	}
	now, _ := totp.GenerateCode(m[1], time.Now())
	if p = web.submit(p, "/account/security/verify", url.Values{"code": {now}}); !strings.Contains(p.body, "Multi-factor authentication is on") {
		t.Fatalf("verify: %d %s", p.status, p.body)
	}

	// The next code (enrollment spent the current one) logs in on B ...
	next, _ := totp.GenerateCode(m[1], time.Now().Add(30*time.Second))
	otpPage := func(base string) (*webClient, webPage) {
		w := newWebClient(t, base)
		cfg := cli("http://"+a, base)
		cfg.Endpoint.AuthURL = base + "/oauth2/authorize"
		p := w.submit(w.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))), "/login", login)
		if p.url.Path != "/login/otp" {
			t.Fatalf("after the password on %s, want the code page, got %d at %s", base, p.status, p.url)
		}
		return w, p
	}
	wb, p := otpPage("http://" + b)
	if p = wb.submit(p, "/login/otp", url.Values{"code": {next}}); p.url.Query().Get("code") == "" {
		t.Fatalf("the code was refused on B: %d at %s: %s", p.status, p.url, p.body)
	}
	// ... and is refused on A.
	wa, p := otpPage("http://" + a)
	if p = wa.submit(p, "/login/otp", url.Values{"code": {next}}); p.status != http.StatusUnauthorized || !strings.Contains(p.body, "already used") {
		t.Fatalf("the code used on B was not refused as used on A: %d at %s: %s", p.status, p.url, p.body)
	}
}

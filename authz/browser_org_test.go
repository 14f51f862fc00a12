package authz_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestConsoleStepUpRedirectInChromium plays the console's step-up redirect
// in a headless Chromium. The console, a confidential client served here,
// signs bob in with his password and calls the API for an organization that
// requires MFA; the API answers 401 with the missing amr; the console sends
// the whole page to the authorization endpoint with amr=mfa. Stepup must ask
// only for what is missing — bob has no authenticator, so the setup page,
// and never the password again — and then return to the console with a
// code whose token the API accepts.
func TestConsoleStepUpRedirectInChromium(t *testing.T) {
	chromium := testenv.Require(t, "chromium", "chromium")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	const (
		consoleID     = "console-local"
		consoleSecret = "console-local-secret-0123456789ab"
	)
	ts := newTestServer(t, func(c *authz.Config) {
		c.Clients = append(c.Clients, authz.Client{ID: consoleID, SecretHash: authz.HashClientSecret(consoleSecret),
			RedirectURIs: []string{"http://127.0.0.1/console/callback"},
			GrantTypes:   []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "profile", "email"}, TokenEndpointAuthMethod: "client_secret_basic"})
		c.Orgs = append(c.Orgs, authz.Org{ID: "team", Name: "Team", MFARequired: true,
			Members: []authz.Member{{UserID: "u_bob", Role: "member"}}})
		// This console is first-party under its own id: its people's
		// tokens must work at the API.
		c.APIClients = []string{cliClient, consoleID}
	})

	con := startConsole(t, ts.Issuer, consoleID, consoleSecret)

	b := newChrome(t, ctx, chromium, ts.Issuer)
	// Every document request, redirects included, in order.
	var (
		navMu sync.Mutex
		navs  []string
	)
	if err := chromedp.Listen(b.ctx, func(ev any) {
		if ev, ok := ev.(*network.EventRequestWillBeSent); ok && ev.Type == network.ResourceTypeDocument {
			navMu.Lock()
			navs = append(navs, ev.Request.Method+" "+ev.Request.URL)
			navMu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	navigations := func() []string {
		navMu.Lock()
		defer navMu.Unlock()
		return slices.Clone(navs)
	}
	defer func() { t.Logf("document requests:\n  %s", strings.Join(navigations(), "\n  ")) }()

	// 1. The console's home page; its Projects link needs a sign-in.
	resp := chromeRun(b, "opening the console", chromedp.NavigateResponse(con.URL+"/console/"))
	if resp.Status != http.StatusOK {
		t.Fatalf("the console answered %d", resp.Status)
	}
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.Search(`//a[normalize-space()='Projects']`)))
	if err != nil {
		t.Fatalf("clicking Projects: %v", err)
	}
	b.checkLanded("clicking Projects without a token", resp, "/login", http.StatusOK)
	b.checkReports("the login page")

	// 2. The password: the console gets a token, the API answers 401 with
	// the missing amr, and the console redirects to the authorization
	// endpoint with amr=mfa, which asks bob to set up an authenticator.
	b.do("typing the password", chromedp.SendKeys(chromedp.ID("username"), "bob"), chromedp.SendKeys(chromedp.ID("password"), alicePassword))
	before := len(navigations())
	b.click("Sign in", "/account/security", http.StatusOK)
	stepUp := navigations()[before:]
	if got := con.apiStatuses(); !slices.Equal(got, []int{http.StatusUnauthorized}) {
		t.Fatalf("after the password the console's API calls answered %v, want [401]", got)
	}
	if got := con.tokenAMRs(); len(got) != 1 || !slices.Equal(got[0], []string{"pwd"}) {
		t.Errorf("the console's first token has amr %q, want [pwd]", got)
	}
	// The chain: the login form, the console's callback and /projects,
	// then the authorization request with amr=mfa, then the setup page.
	i := slices.IndexFunc(stepUp, func(s string) bool {
		u, err := url.Parse(strings.TrimPrefix(s, "GET "))
		return err == nil && strings.HasPrefix(s, "GET "+ts.Issuer+"/oauth2/authorize?") && u.Query().Get("amr") == "mfa"
	})
	if i < 0 {
		t.Fatalf("the console did not redirect to the authorization endpoint with amr=mfa; document requests:\n  %s", strings.Join(stepUp, "\n  "))
	}
	if u, _ := url.Parse(strings.TrimPrefix(stepUp[i], "GET ")); u.Query().Get("client_id") != consoleID || u.Query().Get("redirect_uri") != con.URL+"/console/callback" {
		t.Errorf("the step-up request %s is not the console's", stepUp[i])
	}
	for _, s := range stepUp[i+1:] {
		if u, err := url.Parse(s[strings.Index(s, " ")+1:]); err == nil && strings.HasPrefix(u.Path, "/login") {
			t.Errorf("during the step-up the browser was sent to the login page: %s", s)
		}
	}
	if h := b.text("the account page", chromedp.CSS(`main h2`)); h != "Multi-factor authentication is off" {
		t.Fatalf("the step-up landed on a page headed %q, want the MFA setup offer", h)
	}
	b.checkAccessible("the setup offer", nil)
	b.checkReports("the step-up redirect")

	// 3. Setup in the browser: the secret from the page, a code, Continue.
	b.click("Set up application", "/account/security", http.StatusOK)
	secret := b.text("reading the secret", chromedp.CSS("#totp-secret"))
	b.checkAccessible("the setup page", []string{"code"})
	b.do("typing the code", chromedp.SendKeys(chromedp.ID("code"), code(t, secret, ts.Clock.Now())))
	b.click("Verify & save", "/account/security/verify", http.StatusOK)
	href := chromeRun(b, "reading the Continue link", chromedp.Evaluate[string](
		`(() => { const a = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'I have saved them → Continue'); return a ? a.getAttribute('href') : ''; })()`))
	if !strings.HasPrefix(href, "/oauth2/authorize?resume=") {
		t.Fatalf("after Verify & save the Continue link is %q, want the resumed authorization", href)
	}
	b.checkReports("the setup")

	before = len(navigations())
	resp, err = chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.Search(`//a[normalize-space()='I have saved them → Continue']`)))
	if err != nil {
		t.Fatalf("clicking Continue: %v", err)
	}
	back := navigations()[before:]
	for _, s := range back {
		if u, err := url.Parse(s[strings.Index(s, " ")+1:]); err == nil && strings.HasPrefix(u.Path, "/login") {
			t.Errorf("after Continue the browser was sent to the login page: %s", s)
		}
	}
	if !slices.ContainsFunc(back, func(s string) bool {
		return strings.HasPrefix(s, "GET "+con.URL+"/console/callback?") && strings.Contains(s, "code=")
	}) {
		t.Errorf("after Continue the browser did not reach the console's callback with a code:\n  %s", strings.Join(back, "\n  "))
	}

	// 4. The console exchanged the code and the API answered 200.
	if resp.Status != http.StatusOK || !strings.HasPrefix(resp.URL, con.URL+"/console/projects") {
		t.Fatalf("after Continue the browser is at %s (%d), want the console's projects page", resp.URL, resp.Status)
	}
	if got := con.apiStatuses(); !slices.Equal(got, []int{http.StatusUnauthorized, http.StatusOK}) {
		t.Errorf("the console's API calls answered %v, want [401 200]", got)
	}
	if got := con.tokenAMRs(); len(got) != 2 || !slices.Contains(got[1], "mfa") {
		t.Errorf("the console's tokens have amr %q, want a second one with mfa", got)
	}
	if s := b.text("the API status on the console", chromedp.CSS("#api-status")); s != "200" {
		t.Errorf("the console shows API status %q, want 200", s)
	}
	var org map[string]any
	if err := json.Unmarshal([]byte(b.text("the API answer on the console", chromedp.CSS("#api-body"))), &org); err != nil || org["id"] != "team" {
		t.Errorf("the console shows the API answer %v (%v), want organization team", org, err)
	}
	b.checkReports("back on the console")
}

// console is a small web application with a confidential client: it keeps
// one person's token in memory, calls the organization API with it, and
// answers a step-up challenge by sending the browser to the authorization
// endpoint with the amr the API asked for.
type console struct {
	*httptest.Server
	cfg    *oauth2.Config
	issuer string

	mu       sync.Mutex
	state    string
	verifier string
	token    *oauth2.Token
	statuses []int
	amrs     [][]string
}

func startConsole(t *testing.T, issuer, clientID, secret string) *console {
	t.Helper()
	c := &console{issuer: issuer}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", c.home)
	mux.HandleFunc("GET /console/projects", c.projects)
	mux.HandleFunc("GET /console/callback", c.callback)
	c.Server = httptest.NewUnstartedServer(mux)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Listener = l
	c.Start()
	t.Cleanup(c.Close)
	c.cfg = &oauth2.Config{
		ClientID: clientID, ClientSecret: secret,
		RedirectURL: c.URL + "/console/callback",
		Scopes:      []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{
			AuthURL: issuer + "/oauth2/authorize", TokenURL: issuer + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
	return c
}

func (c *console) apiStatuses() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.statuses)
}

func (c *console) tokenAMRs() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.amrs)
}

func (c *console) page(w http.ResponseWriter, status int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>%s</title><link rel="icon" href="data:,"></head><body><main><h1>%s</h1>%s</main></body></html>`,
		html.EscapeString(title), html.EscapeString(title), body)
}

func (c *console) home(w http.ResponseWriter, r *http.Request) {
	c.page(w, http.StatusOK, "Console", `<p><a href="/console/projects">Projects</a></p>`)
}

// signIn sends the whole page to the authorization endpoint, with extra
// parameters such as the amr of a step-up challenge.
func (c *console) signIn(w http.ResponseWriter, r *http.Request, extra ...oauth2.AuthCodeOption) {
	c.mu.Lock()
	c.state, c.verifier = rand.Text(), oauth2.GenerateVerifier()
	u := c.cfg.AuthCodeURL(c.state, append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(c.verifier)}, extra...)...)
	c.mu.Unlock()
	http.Redirect(w, r, u, http.StatusFound)
}

func (c *console) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c.mu.Lock()
	state, verifier := c.state, c.verifier
	c.state = ""
	c.mu.Unlock()
	if e := q.Get("error"); e != "" {
		c.page(w, http.StatusBadRequest, "Sign-in failed", "<p>"+html.EscapeString(e+": "+q.Get("error_description"))+"</p>")
		return
	}
	if state == "" || q.Get("state") != state {
		c.page(w, http.StatusBadRequest, "Sign-in failed", "<p>Unexpected state.</p>")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	tok, err := c.cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		c.page(w, http.StatusBadGateway, "Sign-in failed", "<p>"+html.EscapeString(err.Error())+"</p>")
		return
	}
	var amr []string
	if parts := strings.Split(tok.AccessToken, "."); len(parts) == 3 {
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var claims struct{ AMR []string }
			if json.Unmarshal(payload, &claims) == nil {
				amr = claims.AMR
			}
		}
	}
	c.mu.Lock()
	c.token = tok
	c.amrs = append(c.amrs, amr)
	c.mu.Unlock()
	http.Redirect(w, r, "/console/projects", http.StatusFound)
}

// projects calls the organization API with the token; a step-up challenge
// sends the browser to sign in again with the amr the API names.
func (c *console) projects(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	if tok == nil {
		c.signIn(w, r)
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, c.issuer+"/api/orgs/team", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.page(w, http.StatusBadGateway, "Projects", "<p>"+html.EscapeString(err.Error())+"</p>")
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.mu.Lock()
	c.statuses = append(c.statuses, resp.StatusCode)
	c.mu.Unlock()
	if resp.StatusCode == http.StatusUnauthorized {
		var challenge struct {
			Error string   `json:"error"`
			AMR   []string `json:"amr"`
		}
		if json.Unmarshal(body, &challenge) == nil && challenge.Error == "insufficient_user_authentication" && len(challenge.AMR) > 0 {
			c.signIn(w, r, oauth2.SetAuthURLParam("amr", strings.Join(challenge.AMR, " ")))
			return
		}
	}
	c.page(w, http.StatusOK, "Projects", fmt.Sprintf(`<p>API status: <output id="api-status">%d</output></p><pre id="api-body">%s</pre>`,
		resp.StatusCode, html.EscapeString(string(body))))
}

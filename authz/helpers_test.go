package authz_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

const (
	alicePassword = "correct horse battery staple"
	cliClient     = "stepup-cli"
	webClient     = "console"
	webSecret     = "console-secret-0123456789abcdef"
	svcClient     = "stepup-gateway"
	svcSecret     = "gateway-secret-0123456789abcdef"
)

// clock runs at real speed from a settable offset, so that tests can jump
// ahead while events still happen in order.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type testServer struct {
	*httptest.Server
	Issuer string
	Clock  *clock
	Store  storage.Store
}

var hashOnce = sync.OnceValue(func() string {
	h, err := authz.HashPassword(alicePassword)
	if err != nil {
		panic(err)
	}
	return h
})

// baseConfig is the configuration most tests run with: a public CLI client,
// a confidential web client, a service client, and two users.
func baseConfig(store storage.Store, now func() time.Time) authz.Config {
	return authz.Config{
		Store:  store,
		Secret: "test-secret-0123456789abcdef",
		Clients: []authz.Client{
			{ID: cliClient, Name: "Stepup CLI", Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
				GrantTypes: []string{"authorization_code", "refresh_token", "api_token"}, ResponseTypes: []string{"code"},
				Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none"},
			{ID: webClient, SecretHash: authz.HashClientSecret(webSecret), RedirectURIs: []string{"https://console.example.com/callback"},
				PostLogoutRedirectURIs: []string{"https://console.example.com/bye"},
				GrantTypes:             []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
				Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "client_secret_basic"},
			{ID: svcClient, SecretHash: authz.HashClientSecret(svcSecret), GrantTypes: []string{"client_credentials"},
				Scopes: []string{"access.read"}, TokenEndpointAuthMethod: "client_secret_basic"},
		},
		Users: []authz.User{
			{ID: "u_alice", Username: "alice", Email: "alice@example.com", Name: "Alice", PasswordHash: hashOnce(), EmailVerified: true},
			{ID: "u_bob", Username: "bob", Email: "bob@example.com", PasswordHash: hashOnce(), EmailVerified: true},
		},
		Orgs: []authz.Org{
			{ID: "acme", Name: "ACME", MFARequired: true, SSOProvider: "acme",
				Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}},
			{ID: "other", Name: "Other", Members: []authz.Member{{UserID: "u_bob", Role: "member"}}},
		},
		Now: now,
	}
}

// newTestServer starts the server over real HTTP on loopback, on the memory
// store with a settable clock. mutate may change the config.
func newTestServer(t testing.TB, mutate func(*authz.Config)) *testServer {
	t.Helper()
	clk := &clock{}
	store := memory.New(memory.Config{Now: clk.Now})
	ts := &testServer{Clock: clk, Store: store}
	ts.Server = httptest.NewUnstartedServer(nil)
	ts.Issuer = "http://" + ts.Listener.Addr().String()
	cfg := baseConfig(store, clk.Now)
	cfg.Issuer = ts.Issuer
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := authz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = fakeClientAddr(srv.Handler())
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

// testClientHeader, on a request to a test server, stands in for the
// client's address: every test client comes from 127.0.0.1, and the
// per-address throttles need others.
const testClientHeader = "X-Test-Client-Addr"

func fakeClientAddr(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get(testClientHeader); a != "" {
			r.RemoteAddr = net.JoinHostPort(a, "40000")
		}
		h.ServeHTTP(w, r)
	})
}

// from makes every request of b come from addr, as the server sees it.
func (b *browser) from(addr string) *browser {
	b.client.Transport = addrTransport{addr: addr, next: b.client.Transport}
	return b
}

type addrTransport struct {
	addr string
	next http.RoundTripper
}

func (t addrTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(testClientHeader, t.addr)
	return t.next.RoundTrip(r)
}

// browser is a cookie-keeping HTTP client that stops at redirects leaving
// the server, as a browser's address bar would show them.
type browser struct {
	t      testing.TB
	client *http.Client
	issuer string
}

func newBrowser(t testing.TB, issuer string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, issuer: issuer}
	b.client = &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if !strings.HasPrefix(req.URL.String(), issuer) {
				return http.ErrUseLastResponse
			}
			return nil
		},
		Transport: &http.Transport{TLSClientConfig: &tls.Config{}},
	}
	return b
}

// page is a response with its body read.
type page struct {
	*http.Response
	Body string
}

func (b *browser) get(u string) page {
	b.t.Helper()
	resp, err := b.client.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	return readPage(b.t, resp)
}

func (b *browser) post(u string, form url.Values) page {
	b.t.Helper()
	resp, err := b.client.PostForm(u, form)
	if err != nil {
		b.t.Fatal(err)
	}
	return readPage(b.t, resp)
}

func readPage(t testing.TB, resp *http.Response) page {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return page{Response: resp, Body: string(body)}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// formValues returns the hidden fields of the page's form.
func formValues(p page) url.Values {
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(p.Body, -1) {
		v.Set(m[1], htmlUnescape(m[2]))
	}
	return v
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&#43;", "+").Replace(s)
}

// login submits the login form on p with the given credentials.
func (b *browser) login(p page, username, password string) page {
	b.t.Helper()
	if !strings.Contains(p.Request.URL.Path, "/login") {
		b.t.Fatalf("expected the login page, got %s (%d): %s", p.Request.URL, p.StatusCode, p.Body)
	}
	form := formValues(p)
	form.Set("username", username)
	form.Set("password", password)
	return b.post(b.issuer+"/login", form)
}

// authorize runs an authorization request to its end: logs in as alice when
// asked to, and returns the redirect back to the client.
func (b *browser) authorize(authURL string) *url.URL {
	b.t.Helper()
	p := b.get(authURL)
	if strings.HasPrefix(p.Request.URL.Path, "/login") {
		p = b.login(p, "alice", alicePassword)
	}
	return redirectOf(b.t, p)
}

func redirectOf(t testing.TB, p page) *url.URL {
	t.Helper()
	if p.StatusCode != http.StatusSeeOther && p.StatusCode != http.StatusFound {
		t.Fatalf("expected a redirect to the client, got %d at %s: %s", p.StatusCode, p.Request.URL, p.Body)
	}
	u, err := url.Parse(p.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// cliConfig is the CLI's OAuth configuration on a loopback port.
func cliConfig(issuer string, port string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    cliClient,
		RedirectURL: "http://127.0.0.1:" + port + "/callback",
		Scopes:      []string{"openid", "offline_access", "profile", "email"},
		Endpoint: oauth2.Endpoint{
			AuthURL: issuer + "/oauth2/authorize", TokenURL: issuer + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

func webConfig(issuer string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: webClient, ClientSecret: webSecret,
		RedirectURL: "https://console.example.com/callback",
		Scopes:      []string{"openid", "offline_access", "profile", "email"},
		Endpoint: oauth2.Endpoint{
			AuthURL: issuer + "/oauth2/authorize", TokenURL: issuer + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
}

// postForm sends a form to the server and decodes the JSON answer.
func postForm(t testing.TB, u string, form url.Values, basicUser, basicPass string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(url.QueryEscape(basicUser), url.QueryEscape(basicPass))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%s answered %d with non-JSON %q", u, resp.StatusCode, body)
		}
	}
	return resp.StatusCode, out
}

// oauthErrorOf returns the RFC 6749 error code of a failed exchange.
func oauthErrorOf(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// exchange runs a full CLI login and returns its token.
func exchange(t testing.TB, ts *testServer, b *browser, extra ...oauth2.AuthCodeOption) (*oauth2.Token, *oauth2.Config) {
	t.Helper()
	cfg := cliConfig(ts.Issuer, "53682")
	verifier := oauth2.GenerateVerifier()
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}, extra...)
	back := b.authorize(cfg.AuthCodeURL("state-0123456789", opts...))
	if e := back.Query().Get("error"); e != "" {
		t.Fatalf("authorization failed: %s: %s", e, back.Query().Get("error_description"))
	}
	tok, err := cfg.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok, cfg
}

// serve runs one request through h in-process.
func serve(h http.Handler, method, target string, body io.Reader) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

package authz_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// liar is an OpenID provider that signs whatever the test tells it to, so
// the tests can check what the SSO callback refuses.
type liar struct {
	*httptest.Server
	mu     sync.Mutex
	nonce  string
	tamper func(claims map[string]any, redirect url.Values)
	// advertiseISS makes discovery promise iss in every authorization
	// response (RFC 9207).
	advertiseISS bool
}

func newLiar(t *testing.T) *liar {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	l := &liar{tamper: func(map[string]any, url.Values) {}}
	mux := http.NewServeMux()
	l.Server = httptest.NewServer(mux)
	t.Cleanup(l.Close)
	iss := l.URL
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		l.mu.Lock()
		advertise := l.advertiseISS
		l.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "authorization_endpoint": iss + "/authorize",
			"token_endpoint": iss + "/token", "jwks_uri": iss + "/jwks", "id_token_signing_alg_values_supported": []string{"ES256"},
			"authorization_response_iss_parameter_supported": advertise})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		l.mu.Lock()
		l.nonce = q.Get("nonce")
		l.mu.Unlock()
		back := url.Values{"code": {"c1"}, "state": {q.Get("state")}, "iss": {iss}}
		l.tamper(map[string]any{}, back)
		http.Redirect(w, r, q.Get("redirect_uri")+"?"+back.Encode(), http.StatusSeeOther)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		claims := map[string]any{"iss": iss, "sub": "up-1", "aud": "stepup", "exp": time.Now().Add(time.Hour).Unix(),
			"iat": time.Now().Unix(), "nonce": l.nonce, "email": "alice@example.com", "email_verified": true}
		l.mu.Unlock()
		l.tamper(claims, url.Values{})
		payload, _ := json.Marshal(claims)
		sig, _ := signer.Sign(payload)
		idToken, _ := sig.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "x", "token_type": "bearer", "id_token": idToken})
	})
	return l
}

var liarLink = regexp.MustCompile(`href="(/sso/liar/start\?challenge=[^"]+)"`)

func TestSSOAgainstALyingProvider(t *testing.T) {
	l := newLiar(t)
	l.advertiseISS = true
	ts := newTestServer(t, func(c *authz.Config) {
		c.SSOProviders = []authz.SSOProvider{{ID: "liar", Issuer: l.URL, ClientID: "stepup", ClientSecret: "s"}}
	})
	attempt := func(t *testing.T) (page, string) { return liarAttempt(t, ts, l) }
	for _, tc := range []struct {
		name   string
		tamper func(claims map[string]any, redirect url.Values)
		status int
		says   string
	}{
		{"ok/honest", func(map[string]any, url.Values) {}, http.StatusSeeOther, ""},
		{"fail/nonce-mismatch", func(c map[string]any, _ url.Values) { c["nonce"] = "another-login" }, 401, "does not belong to this sign-in"},
		{"fail/no-nonce", func(c map[string]any, _ url.Values) { delete(c, "nonce") }, 401, "does not belong to this sign-in"},
		{"fail/wrong-audience", func(c map[string]any, _ url.Values) { c["aud"] = "someone-else" }, 401, "does not check out"},
		{"fail/expired-id-token", func(c map[string]any, _ url.Values) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, 401, "does not check out"},
		{"fail/issuer-mix-up", func(_ map[string]any, r url.Values) {
			if r.Has("iss") {
				r.Set("iss", "https://evil.example")
			}
		}, 400, "different sign-in provider"},
		{"fail/no-iss-though-promised", func(_ map[string]any, r url.Values) { r.Del("iss") }, 400, "does not name its sign-in provider"},
		{"fail/untrusted-mfa-claim-ignored", func(c map[string]any, _ url.Values) { c["amr"] = []string{"pwd", "mfa"} }, http.StatusSeeOther, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.mu.Lock()
			l.tamper = tc.tamper
			l.mu.Unlock()
			p, v := attempt(t)
			if p.StatusCode != tc.status || !strings.Contains(p.Body, tc.says) {
				t.Fatalf("got %d %s, want %d mentioning %q", p.StatusCode, p.Body, tc.status, tc.says)
			}
			if tc.status == http.StatusSeeOther {
				if got := amrOf(t, tokensFrom(t, ts, p, v)); !slices.Equal(got, []string{"sso:liar"}) {
					t.Fatalf("amr %v, want [sso:liar]", got)
				}
			}
		})
	}
}

// TestSSOWithoutISSPromise: a provider that does not advertise RFC 9207
// may leave iss out.
func TestSSOWithoutISSPromise(t *testing.T) {
	l := newLiar(t)
	l.tamper = func(_ map[string]any, r url.Values) { r.Del("iss") }
	ts := newTestServer(t, func(c *authz.Config) {
		c.SSOProviders = []authz.SSOProvider{{ID: "liar", Issuer: l.URL, ClientID: "stepup", ClientSecret: "s"}}
	})
	p, v := liarAttempt(t, ts, l)
	if p.StatusCode != http.StatusSeeOther {
		t.Fatalf("got %d %s, want a login", p.StatusCode, p.Body)
	}
	tokensFrom(t, ts, p, v)
}

// TestSSOSubjectsMapIsTheOnlyWayIn: with an explicit subjects map, an
// unmapped upstream subject is refused even when it presents a local
// person's verified email; a mapped one logs in as its local person.
func TestSSOSubjectsMapIsTheOnlyWayIn(t *testing.T) {
	l := newLiar(t)
	ts := newTestServer(t, func(c *authz.Config) {
		c.SSOProviders = []authz.SSOProvider{{ID: "liar", Issuer: l.URL, ClientID: "stepup", ClientSecret: "s",
			Subjects: map[string]string{"up-bob": "u_bob"}}}
	})
	// The liar's subject up-1 claims alice@example.com, verified.
	p, _ := liarAttempt(t, ts, l)
	if p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, "not linked") {
		t.Fatalf("an unmapped subject with alice's verified email: %d %s", p.StatusCode, p.Body)
	}
	l.mu.Lock()
	l.tamper = func(c map[string]any, _ url.Values) { c["sub"] = "up-bob" }
	l.mu.Unlock()
	p, v := liarAttempt(t, ts, l)
	if p.StatusCode != http.StatusSeeOther {
		t.Fatalf("a mapped subject: %d %s", p.StatusCode, p.Body)
	}
	_, c := jwtParts(t, tokensFrom(t, ts, p, v).AccessToken)
	if c["sub"] != "u_bob" {
		t.Fatalf("the mapped subject logged in as %v, want u_bob (whatever email it sends)", c["sub"])
	}
}

// liarAttempt starts a CLI login at ts and goes through l, returning the
// page the callback answered with.
func liarAttempt(t *testing.T, ts *testServer, l *liar) (page, string) {
	t.Helper()
	b := newBrowser(t, ts.Issuer)
	b.client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if u := req.URL.String(); strings.HasPrefix(u, ts.Issuer) || strings.HasPrefix(u, l.URL) {
			return nil
		}
		return http.ErrUseLastResponse
	}
	v := oauth2.GenerateVerifier()
	p := b.get(cliConfig(ts.Issuer, "53682").AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	m := liarLink.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no 'Sign in with liar': %s", p.Body)
	}
	return b.get(ts.Issuer + htmlUnescape(m[1])), v
}

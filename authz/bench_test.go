package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	fositestorage "github.com/ory/fosite/storage"
	"github.com/ory/fosite/token/jwt"
	xoauth2 "golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// BenchmarkTokenEndpoint measures the token endpoint's own work (handler
// called in-process, no network) for client_credentials and for a full
// authorization code exchange (access token, ID token, refresh token), on
// the memory and Redis stores, beside bare fosite on its memory store and
// beside the raw cost of one ES256 signature measured in the same run.
// Every issuance signs twice or less (access token; plus ID token for a code
// exchange), so "sigs/op" below is the floor.
//
//	go test ./authz -run '^$' -bench TokenEndpoint -benchtime 2s
func BenchmarkTokenEndpoint(b *testing.B) {
	raw := rawES256(b)
	b.Logf("raw ES256 signature: %.1f µs", raw/1e3)
	report := func(b *testing.B, sigs float64) {
		perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(perOp/raw, "x-raw-sign")
		b.ReportMetric(sigs, "sigs/op")
	}
	b.Run("raw-es256-sign", func(b *testing.B) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		digest := sha256.Sum256([]byte("payload"))
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
		report(b, 1)
	})
	for _, store := range []string{"memory", "redis"} {
		b.Run("stepup-"+store, func(b *testing.B) {
			ts := newBenchServer(b, store)
			b.Run("client_credentials", func(b *testing.B) {
				benchClientCredentials(b, ts.Config.Handler)
				report(b, 1)
			})
			b.Run("code_exchange", func(b *testing.B) {
				benchCodeExchange(b, ts.Config.Handler, ts.stepupCodes(b))
				report(b, 2)
			})
		})
	}
	b.Run("fosite-memory", func(b *testing.B) {
		bf := newBareFosite(b, sha256Hasher{})
		b.Run("client_credentials", func(b *testing.B) {
			benchClientCredentials(b, bf)
			report(b, 1)
		})
		b.Run("code_exchange", func(b *testing.B) {
			benchCodeExchange(b, bf, bf.codes(b))
			report(b, 2)
		})
	})
}

func rawES256(b *testing.B) float64 {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("payload"))
	// A plain timed loop: testing.Benchmark would wait on the lock the
	// running benchmark holds.
	const n = 2000
	start := time.Now()
	for range n {
		_, _ = ecdsa.SignASN1(rand.Reader, key, digest[:])
	}
	return float64(time.Since(start).Nanoseconds()) / n
}

func post(h http.Handler, form url.Values, user, pass string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func benchClientCredentials(b *testing.B, h http.Handler) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"access.read"}}
	for b.Loop() {
		if rec := post(h, form, svcClient, svcSecret); rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// benchCodeExchange redeems codes made beforehand, one per iteration.
func benchCodeExchange(b *testing.B, h http.Handler, codes func(n int) []url.Values) {
	forms := codes(b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if rec := post(h, forms[i], "", ""); rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

type benchServer struct {
	*testServer
	cookies []*http.Cookie
}

func newBenchServer(b *testing.B, store string) *benchServer {
	ts := newTestServer(b, func(c *authz.Config) {
		// ES256 ID tokens, so both signatures cost the same as the baseline's.
		for i := range c.Clients {
			c.Clients[i].IDTokenAlg = "ES256"
		}
		if store == "redis" {
			testenv.Require(b, "redis-server", "redis-server")
			st, err := redis.New(redis.Config{URL: "redis://" + testenv.StartRedis(b) + "/0"})
			if err != nil {
				b.Fatal(err)
			}
			c.Store = st
		}
	})
	br := newBrowser(b, ts.Issuer)
	exchange(b, ts, br) // logs in once; the session cookie is reused below
	u, _ := url.Parse(ts.Issuer)
	return &benchServer{testServer: ts, cookies: br.client.Jar.Cookies(u)}
}

// stepupCodes authorizes n times with the logged-in session.
func (ts *benchServer) stepupCodes(b *testing.B) func(int) []url.Values {
	return func(n int) []url.Values {
		cfg := cliConfig(ts.Issuer, "53682")
		forms := make([]url.Values, n)
		for i := range forms {
			v := xoauth2.GenerateVerifier()
			req := httptest.NewRequest(http.MethodGet, cfg.AuthCodeURL("state-0123456789", xoauth2.S256ChallengeOption(v)), nil)
			for _, c := range ts.cookies {
				req.AddCookie(c)
			}
			rec := httptest.NewRecorder()
			ts.Config.Handler.ServeHTTP(rec, req)
			loc, _ := url.Parse(rec.Header().Get("Location"))
			code := loc.Query().Get("code")
			if code == "" {
				b.Fatalf("no code: %d %s", rec.Code, rec.Header().Get("Location"))
			}
			forms[i] = url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {v},
				"client_id": {cliClient}, "redirect_uri": {cfg.RedirectURL}}
		}
		return forms
	}
}

// bareFosite is fosite as its documentation composes it: its own memory
// store, JWT access tokens (ES256), OpenID Connect, PKCE; hasher nil would
// keep fosite's default client-secret hasher (bcrypt, 241 ms a check here).
type bareFosite struct {
	provider fosite.OAuth2Provider
}

type sha256Hasher struct{}

func (sha256Hasher) Hash(_ context.Context, d []byte) ([]byte, error) {
	return []byte(authz.HashClientSecret(string(d))), nil
}
func (sha256Hasher) Compare(_ context.Context, h, d []byte) error {
	if authz.HashClientSecret(string(d)) != string(h) {
		return fosite.ErrNotFound
	}
	return nil
}

func newBareFosite(b *testing.B, hasher fosite.Hasher) *bareFosite {
	cfg := &fosite.Config{
		GlobalSecret:                []byte("some-cool-secret-that-is-32bytes"),
		ClientSecretsHasher:         hasher,
		AccessTokenIssuer:           "http://127.0.0.1:1",
		IDTokenIssuer:               "http://127.0.0.1:1",
		EnforcePKCEForPublicClients: true,
		ScopeStrategy:               fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:    fosite.DefaultAudienceMatchingStrategy,
	}
	secret, err := cfg.GetSecretsHasher(context.Background()).Hash(context.Background(), []byte(svcSecret))
	if err != nil {
		b.Fatal(err)
	}
	store := fositestorage.NewMemoryStore()
	store.Clients[svcClient] = &fosite.DefaultClient{ID: svcClient, Secret: secret,
		GrantTypes: []string{"client_credentials"}, Scopes: []string{"access.read"}}
	store.Clients[cliClient] = &fosite.DefaultClient{ID: cliClient, Public: true,
		RedirectURIs: []string{"http://127.0.0.1/callback"}, ResponseTypes: []string{"code"},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: []string{"openid", "offline_access"}}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	getKey := func(context.Context) (any, error) { return key, nil }
	strategy := &compose.CommonStrategy{
		CoreStrategy:               compose.NewOAuth2JWTStrategy(getKey, compose.NewOAuth2HMACStrategy(cfg), cfg),
		OpenIDConnectTokenStrategy: compose.NewOpenIDConnectStrategy(getKey, cfg),
		Signer:                     &jwt.DefaultSigner{GetPrivateKey: getKey},
	}
	return &bareFosite{provider: compose.Compose(cfg, store, strategy,
		compose.OAuth2AuthorizeExplicitFactory, compose.OAuth2PKCEFactory, compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory, compose.OpenIDConnectExplicitFactory)}
}

func bareSession() *openid.DefaultSession {
	s := openid.NewDefaultSession()
	s.Subject, s.Claims.Subject = "u_alice", "u_alice"
	s.Claims.AuthTime = time.Now()
	return s
}

type bareSess struct {
	*openid.DefaultSession
	jwt *oauth2.JWTSession
}

func (s *bareSess) GetJWTClaims() jwt.JWTClaimsContainer { return s.jwt.GetJWTClaims() }
func (s *bareSess) GetJWTHeader() *jwt.Headers           { return s.jwt.GetJWTHeader() }
func (s *bareSess) Clone() fosite.Session {
	return &bareSess{DefaultSession: s.DefaultSession.Clone().(*openid.DefaultSession), jwt: s.jwt.Clone().(*oauth2.JWTSession)}
}

func newBareSess() *bareSess {
	return &bareSess{DefaultSession: bareSession(), jwt: &oauth2.JWTSession{JWTClaims: &jwt.JWTClaims{Subject: "u_alice"}, JWTHeader: &jwt.Headers{}}}
}

func (f *bareFosite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ar, err := f.provider.NewAccessRequest(ctx, r, newBareSess())
	if err != nil {
		f.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	for _, s := range ar.GetRequestedScopes() {
		ar.GrantScope(s)
	}
	resp, err := f.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		f.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	f.provider.WriteAccessResponse(ctx, w, ar, resp)
}

func (f *bareFosite) codes(b *testing.B) func(int) []url.Values {
	return func(n int) []url.Values {
		forms := make([]url.Values, n)
		for i := range forms {
			v := xoauth2.GenerateVerifier()
			redirect := "http://127.0.0.1:53682/callback"
			q := url.Values{"response_type": {"code"}, "client_id": {cliClient}, "redirect_uri": {redirect},
				"scope": {"openid offline_access"}, "state": {"state-0123456789"}, "nonce": {"nonce-0123456789"},
				"code_challenge": {xoauth2.S256ChallengeFromVerifier(v)}, "code_challenge_method": {"S256"}}
			req := httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil)
			ctx := req.Context()
			ar, err := f.provider.NewAuthorizeRequest(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			ar.GrantScope("openid")
			ar.GrantScope("offline_access")
			resp, err := f.provider.NewAuthorizeResponse(ctx, ar, newBareSess())
			if err != nil {
				b.Fatal(err)
			}
			forms[i] = url.Values{"grant_type": {"authorization_code"}, "code": {resp.GetParameters().Get("code")},
				"code_verifier": {v}, "client_id": {cliClient}, "redirect_uri": {redirect}}
		}
		return forms
	}
}

package verify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/verify"
)

// t0 is the fixed time every test starts at.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable clock shared by a verifier and its test.
type clock struct {
	mu sync.Mutex
	at time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.at }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.at = c.at.Add(d)
	c.mu.Unlock()
}

// fakeIssuer publishes the JWKS of a key set the test controls and counts
// how often it is asked.
type fakeIssuer struct {
	*httptest.Server
	clock *clock

	mu   sync.Mutex
	keys *tokens.KeySet
	// status, when not 200, is answered instead of the keys.
	status int
	// extra are raw JWKs published after the set's own.
	extra []json.RawMessage
	// hold, when set, keeps the JWKS from being answered until it is closed.
	hold chan struct{}
	hits atomic.Int32
}

func newFakeIssuer(t testing.TB, algs ...string) *fakeIssuer {
	t.Helper()
	if len(algs) == 0 {
		algs = []string{tokens.ES256}
	}
	f := &fakeIssuer{clock: &clock{at: t0}, status: http.StatusOK}
	f.keys = newKeySet(t, algs...)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		f.hits.Add(1)
		f.mu.Lock()
		hold, status := f.hold, f.status
		jwks := f.keys.PublicJWKS(f.clock.Now())
		extra := f.extra
		f.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		if status != http.StatusOK {
			http.Error(w, "unavailable", status)
			return
		}
		keys := make([]any, 0, len(jwks.Keys)+len(extra))
		for _, k := range jwks.Keys {
			keys = append(keys, k)
		}
		for _, k := range extra {
			keys = append(keys, k)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(f.Close)
	return f
}

func newKeySet(t testing.TB, algs ...string) *tokens.KeySet {
	t.Helper()
	ks, err := tokens.NewKeySet(algs, t0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func (f *fakeIssuer) setStatus(status int) {
	f.mu.Lock()
	f.status = status
	f.mu.Unlock()
}

// rotate makes the issuer sign with a key the verifier has never seen.
// One rotation would not: Stepup publishes the key a rotation makes current
// a period ahead. Two in a row, as an operator's repeated rotate-keys or a
// verifier offline for a whole period would see it, do.
func (f *fakeIssuer) rotate(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for range 2 {
		if err := f.keys.Rotate(f.clock.Now(), 24*time.Hour, 2*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fakeIssuer) verifier(t testing.TB, edit ...func(*verify.Config)) *verify.Verifier {
	t.Helper()
	cfg := verify.Config{Issuer: f.URL, Audience: f.URL, Now: f.clock.Now}
	for _, e := range edit {
		e(&cfg)
	}
	v, err := verify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// claims are those of a fresh password login to f, at f's clock.
func (f *fakeIssuer) claims() tokens.AccessClaims {
	now := f.clock.Now()
	return tokens.AccessClaims{
		Issuer: f.URL, Subject: "u_alice", Audience: []string{f.URL},
		Expiry: now.Add(time.Hour).Unix(), IssuedAt: now.Unix(), ID: "fam.0123456789ab",
		ClientID: "stepup-cli", Scope: []string{"openid"}, AMR: []string{tokens.MethodPassword},
		AuthTime: now.Unix(), Grant: "authorization_code",
	}
}

// sign signs v as an access token with f's current key for alg (ES256 when
// empty).
func (f *fakeIssuer) sign(t testing.TB, v any, alg ...string) string {
	t.Helper()
	a := tokens.ES256
	if len(alg) > 0 {
		a = alg[0]
	}
	f.mu.Lock()
	s, err := f.keys.Signer(a)
	f.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.SignJSON(v, tokens.TypAccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fakeIssuer) kid(alg string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range f.keys.Current {
		if k.Algorithm == alg {
			return k.KeyID
		}
	}
	return ""
}

func reasonOf(err error) verify.Reason {
	if e, ok := errors.AsType[*verify.Error](err); ok {
		return e.Reason
	}
	return 0
}

// withHeader replaces a token's protected header and keeps its payload and
// signature, as someone relabelling a token would.
func withHeader(t *testing.T, token string, header map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	parts[0] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestVerify(t *testing.T) {
	f := newFakeIssuer(t, tokens.ES256, tokens.RS256, tokens.EdDSA)
	v := f.verifier(t)
	ctx := context.Background()
	now := f.clock.Now()
	leeway := verify.DefaultLeeway

	with := func(edit func(*tokens.AccessClaims)) tokens.AccessClaims {
		c := f.claims()
		edit(&c)
		return c
	}
	good := f.sign(t, f.claims())
	esKID := f.kid(tokens.ES256)
	parts := strings.Split(good, ".")

	// A key the issuer does not publish, signing a token that names the
	// ES256 kid: the header alg is one we accept, but not that key's.
	edKey := newKeySet(t, tokens.EdDSA).Current[0]
	edSigner, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: edKey.Key},
		(&jose.SignerOptions{}).WithType(tokens.TypAccessToken).WithHeader("kid", esKID))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(f.claims())
	jws, err := edSigner.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	algSwapped, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	esPub, _ := json.Marshal(f.keys.PublicJWKS(now).Keys[0])
	hsInput := b64JSON(t, map[string]any{"alg": "HS256", "kid": esKID, "typ": tokens.TypAccessToken}) + "." + parts[1]
	mac := hmac.New(sha256.New, esPub)
	mac.Write([]byte(hsInput))
	hs256 := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	tests := []struct {
		name  string
		token string
		want  verify.Reason // 0: accepted
	}{
		{"ok/es256", good, 0},
		{"ok/rs256", f.sign(t, f.claims(), tokens.RS256), 0},
		{"ok/eddsa", f.sign(t, f.claims(), tokens.EdDSA), 0},
		{"ok/aud-as-string", f.sign(t, map[string]any{"iss": f.URL, "sub": "u_alice", "aud": f.URL, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}), 0},
		{"ok/aud-among-others", f.sign(t, with(func(c *tokens.AccessClaims) { c.Audience = []string{"https://other", f.URL} })), 0},
		{"ok/typ-media-type", withHeaderResigned(t, f, map[string]any{"typ": "application/at+jwt"}), 0},
		{"ok/expired-within-leeway", f.sign(t, with(func(c *tokens.AccessClaims) { c.Expiry = now.Add(-leeway + time.Second).Unix() })), 0},
		{"ok/iat-ahead-within-leeway", f.sign(t, with(func(c *tokens.AccessClaims) { c.IssuedAt = now.Add(leeway).Unix() })), 0},

		{"fail/empty", "", verify.Malformed},
		{"fail/not-a-jws", "not-a-token", verify.Malformed},
		{"fail/four-parts", good + ".x", verify.Malformed},
		{"fail/bad-base64", "!!." + parts[1] + "." + parts[2], verify.Malformed},
		{"fail/json-serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, verify.Malformed},
		{"fail/claims-not-json", f.sign(t, json.RawMessage(`"just a string"`)), verify.Malformed},
		{"fail/no-exp", f.sign(t, with(func(c *tokens.AccessClaims) { c.Expiry = 0 })), verify.Malformed},
		{"fail/no-sub", f.sign(t, with(func(c *tokens.AccessClaims) { c.Subject = "" })), verify.Malformed},

		{"fail/typ-jwt", signTyp(t, f, tokens.TypIDToken), verify.WrongType},
		{"fail/no-typ", signTyp(t, f, ""), verify.WrongType},

		{"fail/alg-none", withHeader(t, parts[0]+"."+parts[1]+".", map[string]any{"alg": "none", "kid": esKID, "typ": tokens.TypAccessToken}), verify.BadSignature},
		{"fail/alg-hs256-public-key-as-secret", hs256, verify.BadSignature},
		{"fail/alg-not-the-keys", algSwapped, verify.BadSignature},
		{"fail/tampered-payload", parts[0] + "." + b64JSON(t, with(func(c *tokens.AccessClaims) { c.AMR = []string{"pwd", "otp", "mfa"} })) + "." + parts[2], verify.BadSignature},
		{"fail/tampered-signature", parts[0] + "." + parts[1] + "." + flipFirstBit(t, parts[2]), verify.BadSignature},

		{"fail/no-kid", withHeader(t, good, map[string]any{"alg": "ES256", "typ": tokens.TypAccessToken}), verify.UnknownKey},
		{"fail/foreign-key", signWith(t, newKeySet(t, tokens.ES256), f.claims()), verify.UnknownKey},

		{"fail/expired", f.sign(t, with(func(c *tokens.AccessClaims) { c.Expiry = now.Add(-leeway).Unix() })), verify.Expired},
		{"fail/iat-in-the-future", f.sign(t, with(func(c *tokens.AccessClaims) { c.IssuedAt = now.Add(leeway + time.Second).Unix() })), verify.NotYetValid},
		{"fail/nbf-in-the-future", f.sign(t, map[string]any{"iss": f.URL, "sub": "u_alice", "aud": []string{f.URL}, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Add(time.Hour).Unix()}), verify.NotYetValid},
		{"fail/wrong-iss", f.sign(t, with(func(c *tokens.AccessClaims) { c.Issuer = "https://evil.example" })), verify.WrongIssuer},
		{"fail/iss-with-slash", f.sign(t, with(func(c *tokens.AccessClaims) { c.Issuer = f.URL + "/" })), verify.WrongIssuer},
		{"fail/wrong-aud", f.sign(t, with(func(c *tokens.AccessClaims) { c.Audience = []string{"https://api.other.example"} })), verify.WrongAudience},
		{"fail/no-aud", f.sign(t, with(func(c *tokens.AccessClaims) { c.Audience = nil })), verify.WrongAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(ctx, tt.token)
			if tt.want == 0 {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if got.Subject != "u_alice" || !strings.Contains(strings.Join(got.Audience, " "), f.URL) {
					t.Errorf("claims %+v", got)
				}
				return
			}
			if got != nil || reasonOf(err) != tt.want {
				t.Fatalf("Verify = %+v, %v; want reason %v", got, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want.String()) {
				t.Errorf("error %q does not name the reason %q", err, tt.want)
			}
		})
	}
	if n := f.hits.Load(); n != 1 {
		t.Errorf("the JWKS was fetched %d times, want once", n)
	}
}

func TestVerifyReturnsClaims(t *testing.T) {
	f := newFakeIssuer(t)
	want := f.claims()
	want.AMR = []string{"otp", "pwd", "mfa"}
	got, err := f.verifier(t).Verify(context.Background(), f.sign(t, want))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("claims\n got %s\nwant %s", g, w)
	}
}

// withHeaderResigned signs f's claims with extra header fields on top of
// alg and kid.
func withHeaderResigned(t *testing.T, f *fakeIssuer, extra map[string]any) string {
	t.Helper()
	f.mu.Lock()
	k := f.keys.Current[0]
	f.mu.Unlock()
	opts := (&jose.SignerOptions{}).WithHeader("kid", k.KeyID)
	for name, v := range extra {
		opts = opts.WithHeader(jose.HeaderKey(name), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k.Key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(f.claims())
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signTyp(t *testing.T, f *fakeIssuer, typ string) string {
	t.Helper()
	s, err := f.keys.Signer(tokens.ES256)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.SignJSON(f.claims(), typ)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signWith(t *testing.T, ks *tokens.KeySet, claims any) string {
	t.Helper()
	s, err := ks.Signer(ks.Algorithms()[0])
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.SignJSON(claims, tokens.TypAccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func flipFirstBit(t *testing.T, b64 string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	raw[0] ^= 1
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestVerifyRotation(t *testing.T) {
	f := newFakeIssuer(t)
	v := f.verifier(t)
	ctx := context.Background()
	before := f.sign(t, f.claims())
	if _, err := v.Verify(ctx, before); err != nil {
		t.Fatal(err)
	}

	f.rotate(t)
	after := f.sign(t, f.claims())
	// Right after a fetch the new kid is not worth another one yet.
	if _, err := v.Verify(ctx, after); reasonOf(err) != verify.UnknownKey {
		t.Fatalf("new key within MinRefetch of the last fetch: %v, want UnknownKey", err)
	}
	if n := f.hits.Load(); n != 1 {
		t.Fatalf("%d fetches within MinRefetch, want 1", n)
	}

	f.clock.Advance(verify.DefaultMinRefetch)
	if _, err := v.Verify(ctx, after); err != nil {
		t.Fatalf("new key after MinRefetch: %v", err)
	}
	if _, err := v.Verify(ctx, before); err != nil {
		t.Fatalf("retired key still published: %v", err)
	}
	if n := f.hits.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}

func TestVerifyUnknownKidStorm(t *testing.T) {
	f := newFakeIssuer(t)
	v := f.verifier(t)
	ctx := context.Background()
	if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil {
		t.Fatal(err)
	}
	foreign := make([]string, 64)
	for i := range foreign {
		foreign[i] = withHeader(t, f.sign(t, f.claims()), map[string]any{"alg": "ES256", "kid": fmt.Sprintf("forged-%d", i), "typ": tokens.TypAccessToken})
	}
	storm := func() {
		var wg sync.WaitGroup
		for _, tok := range foreign {
			wg.Go(func() {
				if _, err := v.Verify(ctx, tok); reasonOf(err) != verify.UnknownKey {
					t.Errorf("forged kid: %v, want UnknownKey", err)
				}
			})
		}
		wg.Wait()
	}

	storm()
	if n := f.hits.Load(); n != 1 {
		t.Errorf("storm within MinRefetch of the first fetch: %d fetches, want 1", n)
	}
	f.clock.Advance(verify.DefaultMinRefetch)
	storm()
	storm()
	if n := f.hits.Load(); n != 2 {
		t.Errorf("two storms in the next MinRefetch window: %d fetches, want 2", n)
	}
	f.clock.Advance(verify.DefaultMinRefetch - time.Second)
	storm()
	if n := f.hits.Load(); n != 2 {
		t.Errorf("storm 1s before the window ends: %d fetches, want 2", n)
	}
}

func TestVerifyRefreshInterval(t *testing.T) {
	f := newFakeIssuer(t)
	v := f.verifier(t)
	ctx := context.Background()
	if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(verify.DefaultRefreshInterval - time.Second)
	if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil || f.hits.Load() != 1 {
		t.Fatalf("before the interval: %v, %d fetches", err, f.hits.Load())
	}

	// Once stale, the cached key still answers at once while the refresh
	// runs, even with the issuer down.
	f.setStatus(http.StatusBadGateway)
	f.clock.Advance(time.Second)
	if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil {
		t.Fatalf("stale cache, issuer down: %v", err)
	}
	waitFor(t, "a refresh", func() bool { return f.hits.Load() == 2 })
	// The failed refresh is retried after MinRefetch, not on every token.
	for range 10 {
		if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil {
			t.Fatal(err)
		}
	}
	f.setStatus(http.StatusOK)
	f.clock.Advance(verify.DefaultMinRefetch)
	if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a retry", func() bool { return f.hits.Load() == 3 })
	if _, err := v.Verify(ctx, f.sign(t, f.claims())); err != nil {
		t.Fatal(err)
	}
	if n := f.hits.Load(); n != 3 {
		t.Errorf("%d fetches after a successful refresh, want 3", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestVerifyKeysUnavailable(t *testing.T) {
	t.Run("fail/issuer-error", func(t *testing.T) {
		f := newFakeIssuer(t)
		v := f.verifier(t)
		tok := f.sign(t, f.claims())
		f.setStatus(http.StatusInternalServerError)
		_, err := v.Verify(context.Background(), tok)
		if reasonOf(err) != verify.KeysUnavailable || !strings.Contains(err.Error(), "500") {
			t.Fatalf("Verify: %v, want KeysUnavailable with the status", err)
		}
		// Paced: the next tokens are refused without asking again...
		if _, err := v.Verify(context.Background(), tok); reasonOf(err) != verify.KeysUnavailable || f.hits.Load() != 1 {
			t.Fatalf("again within MinRefetch: %v, %d fetches", err, f.hits.Load())
		}
		// ...and once the issuer is back, MinRefetch later, accepted.
		f.setStatus(http.StatusOK)
		f.clock.Advance(verify.DefaultMinRefetch)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("issuer back: %v", err)
		}
	})

	t.Run("fail/issuer-down", func(t *testing.T) {
		f := newFakeIssuer(t)
		v := f.verifier(t)
		tok := f.sign(t, f.claims())
		f.Close()
		if _, err := v.Verify(context.Background(), tok); reasonOf(err) != verify.KeysUnavailable {
			t.Fatalf("Verify: %v, want KeysUnavailable", err)
		}
	})

	t.Run("fail/not-a-jwks", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>maintenance</html>"))
		}))
		defer srv.Close()
		f := newFakeIssuer(t)
		v := f.verifier(t, func(c *verify.Config) { c.JWKSURL = srv.URL + "/jwks" })
		if _, err := v.Verify(context.Background(), f.sign(t, f.claims())); reasonOf(err) != verify.KeysUnavailable {
			t.Fatalf("Verify: %v, want KeysUnavailable", err)
		}
	})

	t.Run("fail/new-kid-while-issuer-down", func(t *testing.T) {
		f := newFakeIssuer(t)
		v := f.verifier(t)
		if _, err := v.Verify(context.Background(), f.sign(t, f.claims())); err != nil {
			t.Fatal(err)
		}
		f.rotate(t)
		f.setStatus(http.StatusServiceUnavailable)
		f.clock.Advance(verify.DefaultMinRefetch)
		// The token may be good; the client should retry, not log in again.
		if _, err := v.Verify(context.Background(), f.sign(t, f.claims())); reasonOf(err) != verify.KeysUnavailable {
			t.Fatalf("Verify: %v, want KeysUnavailable", err)
		}
	})

	t.Run("fail/caller-gives-up", func(t *testing.T) {
		f := newFakeIssuer(t)
		hold := make(chan struct{})
		f.mu.Lock()
		f.hold = hold
		f.mu.Unlock()
		v := f.verifier(t)
		tok := f.sign(t, f.claims())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := v.Verify(ctx, tok)
		if reasonOf(err) != verify.KeysUnavailable || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Verify: %v, want KeysUnavailable from the deadline", err)
		}
		// The fetch it started goes on, and the next caller gets its result.
		close(hold)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("after the fetch: %v", err)
		}
		if n := f.hits.Load(); n != 1 {
			t.Errorf("%d fetches, want 1", n)
		}
	})
}

func TestVerifyJWKSContents(t *testing.T) {
	f := newFakeIssuer(t)
	f.extra = []json.RawMessage{
		json.RawMessage(`{"kty":"nonsense","kid":"x"}`),
		json.RawMessage(`{"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0"}`),
	}
	v := f.verifier(t)
	if _, err := v.Verify(context.Background(), f.sign(t, f.claims())); err != nil {
		t.Fatalf("a JWKS with keys we cannot use beside ours: %v", err)
	}

	// A key published for encryption does not verify tokens.
	g := newFakeIssuer(t)
	pub := g.keys.PublicJWKS(t0).Keys[0]
	pub.Use = "enc"
	raw, _ := json.Marshal(pub)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"keys":[%s]}`, raw)
	}))
	defer srv.Close()
	v = g.verifier(t, func(c *verify.Config) { c.JWKSURL = srv.URL })
	if _, err := v.Verify(context.Background(), g.sign(t, g.claims())); reasonOf(err) != verify.KeysUnavailable {
		t.Fatalf("only an encryption key published: %v, want KeysUnavailable", err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	f := newFakeIssuer(t, tokens.ES256, tokens.EdDSA)
	v := f.verifier(t)
	toks := []string{f.sign(t, f.claims()), f.sign(t, f.claims(), tokens.EdDSA)}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for j := range 20 {
				if _, err := v.Verify(context.Background(), toks[(i+j)%2]); err != nil {
					t.Errorf("Verify: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := f.hits.Load(); n != 1 {
		t.Errorf("a cold cache under 32 callers fetched %d times, want 1", n)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  verify.Config
		says string
	}{
		{"fail/no-issuer", verify.Config{Audience: "a"}, "issuer is required"},
		{"fail/no-audience", verify.Config{Issuer: "https://id.example"}, "audience is required"},
		{"fail/relative-jwks", verify.Config{Issuer: "https://id.example", Audience: "a", JWKSURL: "/jwks"}, "absolute"},
		{"fail/issuer-not-a-url", verify.Config{Issuer: "id.example", Audience: "a"}, "absolute"},
		{"fail/negative-leeway", verify.Config{Issuer: "https://id.example", Audience: "a", Leeway: -time.Second}, "Leeway"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := verify.New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("New: %v, want an error saying %q", err, tt.says)
			}
		})
	}
}

// TestVerifyClients: with Clients set, a token of the same issuer and
// audience issued to another client (a third-party relying party) is
// refused; without it, any client's is taken.
func TestVerifyClients(t *testing.T) {
	f := newFakeIssuer(t)
	ctx := context.Background()
	rp := f.claims()
	rp.ClientID = "third-party-rp"
	cli, other := f.sign(t, f.claims()), f.sign(t, rp)

	v := f.verifier(t, func(c *verify.Config) { c.Clients = []string{"stepup-cli", "console"} })
	if _, err := v.Verify(ctx, cli); err != nil {
		t.Errorf("first-party token: %v", err)
	}
	if _, err := v.Verify(ctx, other); !errors.Is(err, verify.WrongClient) {
		t.Errorf("third-party token: %v, want WrongClient", err)
	}
	if _, err := f.verifier(t).Verify(ctx, other); err != nil {
		t.Errorf("without Clients, a third-party token: %v", err)
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]bool{}
	for r := verify.Malformed; r <= verify.KeysUnavailable; r++ {
		s := r.String()
		if strings.HasPrefix(s, "Reason(") || seen[s] {
			t.Errorf("%d: %q", int(r), s)
		}
		seen[s] = true
	}
	if s := verify.Reason(99).String(); s != "Reason(99)" {
		t.Errorf("unknown reason: %q", s)
	}
}

// FuzzVerify: whatever comes in the header, Verify neither panics nor
// accepts it unless it is the issuer's signed token.
func FuzzVerify(f *testing.F) {
	iss := newFakeIssuer(f)
	v := iss.verifier(f)
	good := iss.sign(f, iss.claims())
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add(good[:len(good)-2])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err == nil && token != good {
			// Only a re-encoding of the same signed bytes may pass.
			if c.Subject != "u_alice" {
				t.Fatalf("accepted %q as %+v", token, c)
			}
		}
		if err != nil && reasonOf(err) == 0 {
			t.Fatalf("error without a reason: %v", err)
		}
	})
}

// BenchmarkVerify compares the verifier, with its cache warm, to go-jose
// alone parsing and checking the same token with the same key: the
// difference is the typ, kid and claims checks and the cache lookup.
func BenchmarkVerify(b *testing.B) {
	f := newFakeIssuer(b)
	v := f.verifier(b)
	tok := f.sign(b, f.claims())
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	pub := f.keys.PublicJWKS(t0).Keys[0].Key

	// A resource server sees one token on every request of a session: the
	// verifier checks its signature once a minute and remembers it.
	b.Run("verifier", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A token seen for the first time: the whole check.
	uncached := f.verifier(b, func(c *verify.Config) { c.CacheSize = -1 })
	b.Run("verifier-first-sight", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := uncached.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-jose", func(b *testing.B) {
		b.ReportAllocs()
		algs := []jose.SignatureAlgorithm{jose.ES256}
		for b.Loop() {
			obj, err := jose.ParseSigned(tok, algs)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := obj.Verify(pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestVerifiedTokensAreRemembered: a token verified once is taken on trust
// for at most a minute (cacheTTL) and never past its expiry; after that
// its signature is checked again, so a key the issuer withdraws stops
// working. What Verify returns is the caller's to change.
func TestVerifiedTokensAreRemembered(t *testing.T) {
	f := newFakeIssuer(t)
	v := f.verifier(t, func(c *verify.Config) { c.RefreshInterval = 30 * time.Second })
	ctx := context.Background()
	tok := f.sign(t, f.claims())
	got, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	got.AMR[0] = "changed"
	if again, err := v.Verify(ctx, tok); err != nil || again.AMR[0] != tokens.MethodPassword {
		t.Fatalf("the remembered claims were changed by a caller: %v, %v", again, err)
	}
	// The issuer withdraws its key: within the minute the token is still
	// remembered, after it the signature is checked against the new keys.
	f.mu.Lock()
	f.keys = newKeySet(t, tokens.ES256)
	f.mu.Unlock()
	f.clock.Advance(40 * time.Second)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("within the minute: %v", err)
	}
	f.clock.Advance(30 * time.Second)
	// The stale keys are refreshed behind the first check that finds them
	// old, which still passes on the old key; once the new keys are in and
	// that check's minute is over, the token fails: a withdrawn key stops
	// working within the keys' refresh interval and a minute.
	hits := f.hits.Load()
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("the check that finds the keys stale: %v", err)
	}
	for f.hits.Load() == hits {
		time.Sleep(time.Millisecond)
	}
	// The fetched keys are installed just after the issuer has answered;
	// until then each minute's check may pass on the old key once more.
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.clock.Advance(61 * time.Second)
		_, err := v.Verify(ctx, tok)
		if errors.Is(err, verify.UnknownKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the refresh, a token of a withdrawn key: %v, want unknown key", err)
		}
		time.Sleep(time.Millisecond)
	}

	// A remembered token expires when it does.
	f2 := newFakeIssuer(t)
	v2 := f2.verifier(t, func(c *verify.Config) { c.Leeway = time.Second })
	c := f2.claims()
	c.Expiry = f2.clock.Now().Add(10 * time.Second).Unix()
	short := f2.sign(t, c)
	if _, err := v2.Verify(ctx, short); err != nil {
		t.Fatal(err)
	}
	f2.clock.Advance(12 * time.Second)
	if _, err := v2.Verify(ctx, short); !errors.Is(err, tokens.Expired) {
		t.Fatalf("a remembered token past its exp: %v, want expired", err)
	}
	// With the cache off, every call checks the signature (and fetches
	// nothing more: the keys are cached apart).
	v3 := f2.verifier(t, func(c *verify.Config) { c.CacheSize = -1 })
	for range 3 {
		if _, err := v3.Verify(ctx, f2.sign(t, f2.claims())); err != nil {
			t.Fatal(err)
		}
	}
}

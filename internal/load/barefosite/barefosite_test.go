package barefosite_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/internal/load/barefosite"
)

const (
	clientID = "svc"
	secret   = "0123456789abcdef0123456789abcdef"
)

func newServer(t *testing.T) (*httptest.Server, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	iss := "http://" + srv.Listener.Addr().String()
	h, err := barefosite.New(barefosite.Config{Issuer: iss, ClientID: clientID, ClientSecret: secret, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if !h.PublicKey().Equal(&key.PublicKey) {
		t.Fatal("PublicKey is not the configured key's")
	}
	srv.Config.Handler = h
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, key
}

func token(t *testing.T, base, id, sec string) (*oauth2.Token, error) {
	t.Helper()
	cc := clientcredentials.Config{ClientID: id, ClientSecret: sec, TokenURL: base + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}
	return cc.Token(context.Background())
}

type introspection struct {
	Active   bool   `json:"active"`
	ClientID string `json:"client_id"`
	Sub      string `json:"sub"`
	Error    string `json:"error"`
}

func introspect(t *testing.T, base, id, sec, tok string) (int, introspection) {
	t.Helper()
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(sec))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out introspection
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("introspection answer %d %q: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, out
}

func TestClientCredentialsES256(t *testing.T) {
	srv, key := newServer(t)
	tok, err := token(t, srv.URL, clientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("the access token is not an ES256 JWS: %v", err)
	}
	payload, err := jws.Verify(&key.PublicKey)
	if err != nil {
		t.Fatalf("the access token does not verify with the server's key: %v", err)
	}
	var claims struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
		Jti string `json:"jti"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != srv.URL || claims.Sub != clientID || claims.Jti == "" || time.Unix(claims.Exp, 0).Before(time.Now()) {
		t.Errorf("claims %+v: want iss %s, sub %s, a jti, exp in the future", claims, srv.URL, clientID)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := jws.Verify(&other.PublicKey); err == nil {
		t.Error("the access token verifies with an unrelated key")
	}

	status, in := introspect(t, srv.URL, clientID, secret, tok.AccessToken)
	if status != http.StatusOK || !in.Active || in.ClientID != clientID || in.Sub != clientID {
		t.Errorf("introspection: %d %+v, want 200, active, client_id and sub %s", status, in, clientID)
	}
}

func TestInactiveTokens(t *testing.T) {
	srv, _ := newServer(t)
	tok, err := token(t, srv.URL, clientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	// Same header and claims under another signature: not a token the
	// server issued.
	parts := strings.Split(tok.AccessToken, ".")
	forged := parts[0] + "." + parts[1] + ".AAAA" + parts[2][4:]
	for name, tk := range map[string]string{"forged signature": forged, "not a token": "nope"} {
		if status, in := introspect(t, srv.URL, clientID, secret, tk); status != http.StatusOK || in.Active {
			t.Errorf("%s: %d %+v, want 200 inactive", name, status, in)
		}
	}
}

func TestWrongSecretRefused(t *testing.T) {
	srv, _ := newServer(t)
	for name, c := range map[string][2]string{
		"wrong secret":   {clientID, secret + "x"},
		"empty secret":   {clientID, ""},
		"unknown client": {"nobody", secret},
	} {
		_, err := token(t, srv.URL, c[0], c[1])
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
			t.Errorf("token, %s: %v, want 401 invalid_client", name, err)
		}
	}
	tok, err := token(t, srv.URL, clientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	if status, in := introspect(t, srv.URL, clientID, "wrong", tok.AccessToken); status != http.StatusUnauthorized || in.Active {
		t.Errorf("introspection with a wrong secret: %d %+v, want 401", status, in)
	}
}

func TestRoutes(t *testing.T) {
	srv, _ := newServer(t)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/healthz", 200},
		{http.MethodPost, "/healthz", 405},
		{http.MethodGet, "/oauth2/token", 405},
		{http.MethodGet, "/oauth2/authorize", 404},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d %q, want %d", c.method, c.path, resp.StatusCode, body, c.want)
		}
		if c.want == 200 && string(body) != "ok\n" {
			t.Errorf("%s %s: body %q, want ok", c.method, c.path, body)
		}
	}
}

func TestConfig(t *testing.T) {
	if _, err := barefosite.New(barefosite.Config{ClientID: clientID}); err == nil {
		t.Error("New without a secret: no error")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := barefosite.New(barefosite.Config{ClientID: clientID, ClientSecret: secret, Key: p384}); err == nil {
		t.Error("New with a P-384 key: no error")
	}
}

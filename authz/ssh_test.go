package authz_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"

	"github.com/stepup-dev/stepup/tokens/sshca"
)

func userKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return string(ssh.MarshalAuthorizedKey(k))
}

func postSSH(t *testing.T, ts *testServer, token string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.Issuer+"/ssh", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST /ssh: %d with a non-JSON body", resp.StatusCode)
	}
	return resp.StatusCode, out
}

func keyBody(key string) []byte {
	b, _ := json.Marshal(map[string]string{"key": key})
	return b
}

func TestSSHCertificate(t *testing.T) {
	ts := newTestServer(t, nil)
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	status, body := postSSH(t, ts, tok.AccessToken, keyBody(userKey(t)))
	if status != 200 {
		t.Fatalf("POST /ssh: %d %v", status, body)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(body["certificate"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	cert := parsed.(*ssh.Certificate)
	_, at := jwtParts(t, tok.AccessToken)
	now := time.Now()
	if cert.CertType != ssh.UserCert || cert.KeyId != "u_alice" || !slices.Equal(cert.ValidPrincipals, []string{"alice"}) {
		t.Fatalf("certificate identity: type %d key id %q principals %v", cert.CertType, cert.KeyId, cert.ValidPrincipals)
	}
	if after := time.Unix(int64(cert.ValidAfter), 0); after.After(now) || now.Sub(after) > 2*time.Minute {
		t.Errorf("ValidAfter = %s, want about a minute ago", after)
	}
	if before := time.Unix(int64(cert.ValidBefore), 0); before.After(time.Unix(int64(at["exp"].(float64)), 0)) || before.Sub(now) > time.Hour {
		t.Errorf("ValidBefore = %s, past the token's expiry or an hour", before)
	}
	for _, ext := range []string{"permit-pty", "permit-port-forwarding", "permit-agent-forwarding"} {
		if _, ok := cert.Extensions[ext]; !ok {
			t.Errorf("missing extension %s", ext)
		}
	}
	host := strings.Split(strings.TrimPrefix(ts.Issuer, "http://"), ":")[0]
	claims, jti, err := sshca.ParseClaims(cert, host)
	if err != nil {
		t.Fatal(err)
	}
	if jti != at["jti"] || !slices.Equal(claims.AMR, []string{"pwd"}) || claims.Grant != "authorization_code" || claims.AuthTime != int64(at["auth_time"].(float64)) {
		t.Errorf("certificate claims %+v, token id %s; token %v", claims, jti, at)
	}
	// The certificate is signed by an authority the server publishes.
	status, auth := getJSON(t, ts.Issuer+"/ssh/authority", "")
	list := strs(auth["authorities"])
	if status != 200 || len(list) == 0 || strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert.SignatureKey))) != list[0] {
		t.Fatalf("authorities %v do not start with the signing key", auth)
	}
}

func TestSSHCertificateRefusals(t *testing.T) {
	ts := newTestServer(t, nil)
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	weak, _ := ssh.NewPublicKey(&rsaKey.PublicKey)
	status, body := postSSH(t, ts, tok.AccessToken, keyBody(userKey(t)))
	if status != 200 {
		t.Fatal(body)
	}
	certLine := body["certificate"].(string)
	svc, err := (&clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: ts.Issuer + "/oauth2/token", Scopes: []string{"access.read"}}).Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		token  string
		body   []byte
		status int
		says   string
	}{
		{"fail/no-token", "", keyBody(userKey(t)), 401, "Bearer"},
		{"fail/garbage-token", "garbage", keyBody(userKey(t)), 401, "malformed"},
		{"fail/client-token", svc.AccessToken, keyBody(userKey(t)), 403, "people"},
		{"fail/malformed-key", tok.AccessToken, keyBody("ssh-ed25519 AAAAnotbase64!!"), 400, ""},
		{"fail/certificate-instead-of-key", tok.AccessToken, keyBody(certLine), 400, "certificate"},
		{"fail/weak-rsa", tok.AccessToken, keyBody(string(ssh.MarshalAuthorizedKey(weak))), 400, "3072"},
		{"fail/not-json", tok.AccessToken, []byte("ssh-ed25519 AAAA"), 400, "JSON"},
		{"fail/unknown-field", tok.AccessToken, []byte(`{"key": "x", "admin": true}`), 400, "JSON"},
		{"fail/huge-body", tok.AccessToken, keyBody(strings.Repeat("A", 1<<20)), 413, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postSSH(t, ts, tc.token, tc.body)
			desc, _ := body["error_description"].(string)
			if status != tc.status || body["error"] == nil || desc == "" || !strings.Contains(desc, tc.says) {
				t.Fatalf("got %d %v, want %d mentioning %q", status, body, tc.status, tc.says)
			}
		})
	}
	t.Run("fail/token-for-another-audience", func(t *testing.T) {
		other := newTestServer(t, func(c *authz.Config) { c.Clients[0].Audience = []string{"https://other.example"} })
		tok, _ := exchange(t, other, newBrowser(t, other.Issuer), oauth2.SetAuthURLParam("audience", "https://other.example"))
		if _, c := jwtParts(t, tok.AccessToken); !slices.Equal(strs(c["aud"]), []string{"https://other.example"}) {
			t.Fatalf("setup: aud = %v", c["aud"])
		}
		if status, body := postSSH(t, other, tok.AccessToken, keyBody(userKey(t))); status != 401 || !strings.Contains(body["error_description"].(string), "another audience") {
			t.Fatalf("got %d %v, want 401", status, body)
		}
	})
	t.Run("fail/expired-token", func(t *testing.T) {
		ts.Clock.Advance(2 * time.Hour)
		defer ts.Clock.Advance(-2 * time.Hour)
		if status, body := postSSH(t, ts, tok.AccessToken, keyBody(userKey(t))); status != 401 {
			t.Fatalf("got %d %v, want 401", status, body)
		}
	})
}

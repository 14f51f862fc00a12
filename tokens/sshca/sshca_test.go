package sshca

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestSignFields(t *testing.T) {
	ca := newEd25519Signer(t)
	a := newAuthority(t, ca, nil)
	user := newEd25519Key(t)

	cert, err := a.Sign(validRequest(user))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if cert.CertType != ssh.UserCert {
		t.Errorf("CertType = %d, want UserCert", cert.CertType)
	}
	if cert.KeyId != "u_123" {
		t.Errorf("KeyId = %q, want u_123", cert.KeyId)
	}
	if len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "alice" {
		t.Errorf("ValidPrincipals = %q, want [alice]", cert.ValidPrincipals)
	}
	if !sameKey(cert.Key, user) {
		t.Error("certificate is not for the user's key")
	}
	if !sameKey(cert.SignatureKey, ca.PublicKey()) {
		t.Error("certificate is not signed by the CA key")
	}
	if !sameKey(a.PublicKey(), ca.PublicKey()) {
		t.Error("Authority.PublicKey is not the CA key")
	}
	if got, want := cert.ValidAfter, uint64(t0.Add(-time.Minute).Unix()); got != want {
		t.Errorf("ValidAfter = %d, want now-1m = %d", got, want)
	}
	if got, want := cert.ValidBefore, uint64(t0.Add(time.Hour).Unix()); got != want {
		t.Errorf("ValidBefore = %d, want now+1h = %d", got, want)
	}
	if cert.Serial == 0 {
		t.Error("Serial is 0")
	}
	if len(cert.CriticalOptions) != 0 {
		t.Errorf("CriticalOptions = %v, want none", cert.CriticalOptions)
	}
	wantExt := map[string]string{
		"permit-X11-forwarding":       "",
		"permit-agent-forwarding":     "",
		"permit-port-forwarding":      "",
		"permit-pty":                  "",
		"permit-user-rc":              "",
		"token-claims@id.example.com": `{"amr":["pwd","otp","mfa"],"auth_time":1772600467,"grant":"authorization_code","scp":["openid","ssh"]}`,
		"token-id@id.example.com":     "jti-0f3c",
	}
	if !maps.Equal(cert.Extensions, wantExt) {
		t.Errorf("Extensions =\n%q\nwant\n%q", cert.Extensions, wantExt)
	}

	again, err := a.Sign(validRequest(user))
	if err != nil {
		t.Fatal(err)
	}
	if again.Serial == cert.Serial {
		t.Errorf("two certificates share serial %d", cert.Serial)
	}
}

func TestSignWindow(t *testing.T) {
	tests := []struct {
		name        string
		cfg         func(*Config)
		tokenExpiry time.Time
		wantAfter   time.Time
		wantBefore  time.Time
	}{
		{"ok/defaults", nil, t0.Add(2 * time.Hour), t0.Add(-time.Minute), t0.Add(time.Hour)},
		{"ok/capped-by-token-expiry", nil, t0.Add(10 * time.Minute), t0.Add(-time.Minute), t0.Add(10 * time.Minute)},
		{"ok/token-expiry-exactly-max-ttl", nil, t0.Add(time.Hour), t0.Add(-time.Minute), t0.Add(time.Hour)},
		{"ok/capped-by-max-ttl", func(c *Config) { c.MaxTTL = 5 * time.Minute }, t0.Add(10 * time.Minute), t0.Add(-time.Minute), t0.Add(5 * time.Minute)},
		{"ok/backdate", func(c *Config) { c.Backdate = 30 * time.Second }, t0.Add(2 * time.Hour), t0.Add(-30 * time.Second), t0.Add(time.Hour)},
		{"ok/fractional-expiry-rounds-down", nil, t0.Add(10*time.Minute + 900*time.Millisecond), t0.Add(-time.Minute), t0.Add(10 * time.Minute)},
		{"ok/one-second-left", nil, t0.Add(time.Second), t0.Add(-time.Minute), t0.Add(time.Second)},
	}
	ca := newEd25519Signer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthority(t, ca, tt.cfg)
			req := validRequest(newEd25519Key(t))
			req.TokenExpiry = tt.tokenExpiry
			cert, err := a.Sign(req)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if got := time.Unix(int64(cert.ValidAfter), 0).UTC(); !got.Equal(tt.wantAfter) {
				t.Errorf("ValidAfter = %v, want %v", got, tt.wantAfter)
			}
			if got := time.Unix(int64(cert.ValidBefore), 0).UTC(); !got.Equal(tt.wantBefore) {
				t.Errorf("ValidBefore = %v, want %v", got, tt.wantBefore)
			}
		})
	}
}

func TestSignClaimsJSON(t *testing.T) {
	tests := []struct {
		name   string
		claims Claims
		want   string
	}{
		{"ok/full", Claims{AMR: []string{"pwd", "mfa", "sso:acme"}, AuthTime: 1700000000, Grant: "authorization_code", Scope: []string{"openid", "ssh"}},
			`{"amr":["pwd","mfa","sso:acme"],"auth_time":1700000000,"grant":"authorization_code","scp":["openid","ssh"]}`},
		{"ok/nil-lists-are-empty-arrays", Claims{Grant: "api_token"},
			`{"amr":[],"auth_time":0,"grant":"api_token","scp":[]}`},
		{"ok/empty-lists", Claims{AMR: []string{}, Scope: []string{}},
			`{"amr":[],"auth_time":0,"grant":"","scp":[]}`},
		{"ok/no-html-escaping", Claims{AMR: []string{"pwd"}, Grant: "a<b>&c", Scope: []string{"x"}},
			`{"amr":["pwd"],"auth_time":0,"grant":"a<b>&c","scp":["x"]}`},
	}
	a := newAuthority(t, newEd25519Signer(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest(newEd25519Key(t))
			req.Claims = tt.claims
			cert, err := a.Sign(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := cert.Extensions[ClaimsExtension(testDomain)]; got != tt.want {
				t.Errorf("claims extension =\n%s\nwant\n%s", got, tt.want)
			}

			// The round trip through the wire form, as a gateway sees it.
			parsed, err := ssh.ParsePublicKey(cert.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			claims, id, err := ParseClaims(parsed.(*ssh.Certificate), testDomain)
			if err != nil {
				t.Fatalf("ParseClaims: %v", err)
			}
			if id != req.TokenID {
				t.Errorf("token id = %q, want %q", id, req.TokenID)
			}
			want := tt.claims.normalized()
			if !equalClaims(claims, want) {
				t.Errorf("ParseClaims = %+v, want %+v", claims, want)
			}
		})
	}
}

func equalClaims(a, b Claims) bool {
	return strings.Join(a.AMR, " ") == strings.Join(b.AMR, " ") && a.AMR != nil && b.AMR != nil &&
		strings.Join(a.Scope, " ") == strings.Join(b.Scope, " ") && a.Scope != nil && b.Scope != nil &&
		a.AuthTime == b.AuthTime && a.Grant == b.Grant
}

func TestParseClaimsRefuses(t *testing.T) {
	a := newAuthority(t, newEd25519Signer(t), nil)
	good, err := a.Sign(validRequest(newEd25519Key(t)))
	if err != nil {
		t.Fatal(err)
	}
	withExt := func(edit func(map[string]string)) *ssh.Certificate {
		c := *good
		c.Permissions.Extensions = maps.Clone(good.Extensions)
		edit(c.Permissions.Extensions)
		return &c
	}
	tests := []struct {
		name    string
		cert    *ssh.Certificate
		domain  string
		missing bool
	}{
		{"fail/nil-cert", nil, testDomain, false},
		{"fail/empty-domain", good, "", false},
		{"fail/other-domain", good, "other.example.com", true},
		{"fail/no-claims", withExt(func(m map[string]string) { delete(m, ClaimsExtension(testDomain)) }), testDomain, true},
		{"fail/no-token-id", withExt(func(m map[string]string) { delete(m, TokenIDExtension(testDomain)) }), testDomain, true},
		{"fail/bad-json", withExt(func(m map[string]string) { m[ClaimsExtension(testDomain)] = `{"amr":` }), testDomain, false},
		{"fail/trailing-json", withExt(func(m map[string]string) { m[ClaimsExtension(testDomain)] = `{}{}` }), testDomain, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseClaims(tt.cert, tt.domain)
			if err == nil {
				t.Fatal("ParseClaims succeeded")
			}
			if got := errors.Is(err, ErrNoTokenExtensions); got != tt.missing {
				t.Errorf("errors.Is(%v, ErrNoTokenExtensions) = %v, want %v", err, got, tt.missing)
			}
		})
	}
}

func TestSignedCertChecks(t *testing.T) {
	ca := newEd25519Signer(t)
	a := newAuthority(t, ca, nil)
	req := validRequest(newEd25519Key(t))
	req.TokenExpiry = t0.Add(30 * time.Minute)
	cert, err := a.Sign(req)
	if err != nil {
		t.Fatal(err)
	}
	after := t0.Add(-time.Minute)
	before := t0.Add(30 * time.Minute)

	tests := []struct {
		name      string
		principal string
		at        time.Time
		ok        bool
	}{
		{"ok/now", "alice", t0, true},
		{"ok/first-second", "alice", after, true},
		{"ok/last-second", "alice", before.Add(-time.Second), true},
		{"fail/before-window", "alice", after.Add(-time.Second), false},
		{"fail/at-valid-before", "alice", before, false},
		{"fail/after-token-expiry", "alice", before.Add(time.Hour), false},
		{"fail/other-principal", "bob", t0, false},
		{"fail/principal-prefix", "alic", t0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkerFor(ca.PublicKey(), tt.at).CheckCert(tt.principal, cert)
			if tt.ok && err != nil {
				t.Fatalf("CheckCert(%q) at %v: %v", tt.principal, tt.at, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("CheckCert(%q) at %v succeeded", tt.principal, tt.at)
			}
		})
	}

	t.Run("ok/authenticate-as-gateway", func(t *testing.T) {
		perms, err := checkerFor(ca.PublicKey(), t0).Authenticate(connMeta{"alice"}, cert)
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if perms.Extensions[TokenIDExtension(testDomain)] != req.TokenID {
			t.Errorf("permissions lack the token id: %v", perms.Extensions)
		}
	})
	t.Run("fail/unknown-authority", func(t *testing.T) {
		other := newEd25519Signer(t).PublicKey()
		if _, err := checkerFor(other, t0).Authenticate(connMeta{"alice"}, cert); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("fail/tampered", func(t *testing.T) {
		c := *cert
		c.ValidPrincipals = []string{"root"}
		if err := checkerFor(ca.PublicKey(), t0).CheckCert("root", &c); err == nil {
			t.Fatal("a certificate with changed principals verified")
		}
	})
}

func TestSignRefuses(t *testing.T) {
	ca := newEd25519Signer(t)
	a := newAuthority(t, ca, nil)
	weak, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	weakPub, err := ssh.NewPublicKey(&weak.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	goodCert, err := a.Sign(validRequest(newEd25519Key(t)))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		edit       func(*Request)
		wantReq    RequestReason
		wantKeyErr KeyReason
	}{
		{"fail/token-expired", func(r *Request) { r.TokenExpiry = t0.Add(-time.Second) }, RequestTokenExpired, 0},
		{"fail/token-expires-now", func(r *Request) { r.TokenExpiry = t0 }, RequestTokenExpired, 0},
		{"fail/token-expires-within-the-second", func(r *Request) { r.TokenExpiry = t0.Add(999 * time.Millisecond) }, RequestTokenExpired, 0},
		{"fail/no-token-expiry", func(r *Request) { r.TokenExpiry = time.Time{} }, RequestTokenExpired, 0},
		{"fail/empty-username", func(r *Request) { r.Username = "" }, RequestBadUsername, 0},
		{"fail/username-space", func(r *Request) { r.Username = "alice smith" }, RequestBadUsername, 0},
		{"fail/username-comma", func(r *Request) { r.Username = "alice,root" }, RequestBadUsername, 0},
		{"fail/username-tab", func(r *Request) { r.Username = "alice\t" }, RequestBadUsername, 0},
		{"fail/username-newline", func(r *Request) { r.Username = "alice\nroot" }, RequestBadUsername, 0},
		{"fail/username-nul", func(r *Request) { r.Username = "alice\x00" }, RequestBadUsername, 0},
		{"fail/username-nbsp", func(r *Request) { r.Username = "alice\u00a0" }, RequestBadUsername, 0},
		{"fail/username-invalid-utf8", func(r *Request) { r.Username = "alice\xff" }, RequestBadUsername, 0},
		{"fail/username-too-long", func(r *Request) { r.Username = strings.Repeat("a", 257) }, RequestBadUsername, 0},
		{"fail/empty-user-id", func(r *Request) { r.UserID = "" }, RequestBadUserID, 0},
		{"fail/user-id-newline", func(r *Request) { r.UserID = "u_1\nu_2" }, RequestBadUserID, 0},
		{"fail/empty-token-id", func(r *Request) { r.TokenID = "" }, RequestNoTokenID, 0},
		{"fail/no-key", func(r *Request) { r.PublicKey = nil }, 0, KeyMalformed},
		{"fail/certificate-as-key", func(r *Request) { r.PublicKey = goodCert }, 0, KeyIsCertificate},
		{"fail/rsa-2048", func(r *Request) { r.PublicKey = weakPub }, 0, KeyTooWeak},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest(newEd25519Key(t))
			tt.edit(&req)
			cert, err := a.Sign(req)
			if err == nil {
				t.Fatalf("Sign succeeded: %v", cert)
			}
			if cert != nil {
				t.Error("Sign returned a certificate with its error")
			}
			var reqErr *RequestError
			var keyErr *KeyError
			switch {
			case tt.wantReq != 0:
				if !errors.As(err, &reqErr) || reqErr.Reason != tt.wantReq {
					t.Fatalf("err = %v (%T), want RequestError %v", err, err, tt.wantReq)
				}
			default:
				if !errors.As(err, &keyErr) || keyErr.Reason != tt.wantKeyErr {
					t.Fatalf("err = %v (%T), want KeyError %v", err, err, tt.wantKeyErr)
				}
			}
			if err.Error() == "" {
				t.Error("empty error message")
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	ca := newEd25519Signer(t)
	tests := []struct {
		name   string
		cfg    Config
		signer ssh.Signer
	}{
		{"fail/no-domain", Config{}, ca},
		{"fail/domain-with-at", Config{Domain: "a@b"}, ca},
		{"fail/domain-with-space", Config{Domain: "id example"}, ca},
		{"fail/no-signer", Config{Domain: testDomain}, nil},
		{"fail/negative-max-ttl", Config{Domain: testDomain, MaxTTL: -time.Second}, ca},
		{"fail/max-ttl-over-an-hour", Config{Domain: testDomain, MaxTTL: 2 * time.Hour}, ca},
		{"fail/negative-backdate", Config{Domain: testDomain, Backdate: -time.Second}, ca},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a, err := New(tt.cfg, tt.signer); err == nil {
				t.Fatalf("New succeeded: %+v", a)
			}
		})
	}
	t.Run("ok/defaults", func(t *testing.T) {
		a, err := New(Config{Domain: testDomain}, ca)
		if err != nil {
			t.Fatal(err)
		}
		if a.cfg.MaxTTL != time.Hour || a.cfg.Backdate != time.Minute || a.cfg.Now == nil {
			t.Errorf("defaults not applied: %+v", a.cfg)
		}
	})
}

func TestExtensionNames(t *testing.T) {
	if got := ClaimsExtension("id.example.com"); got != "token-claims@id.example.com" {
		t.Errorf("ClaimsExtension = %q", got)
	}
	if got := TokenIDExtension("id.example.com"); got != "token-id@id.example.com" {
		t.Errorf("TokenIDExtension = %q", got)
	}
}

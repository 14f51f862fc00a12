package sshca

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// t0 is the fixed clock of every test: a whole second, so that the
// expected certificate times are exact.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const testDomain = "id.example.com"

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newEd25519Signer(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEd25519Key(t testing.TB) ssh.PublicKey {
	t.Helper()
	return newEd25519Signer(t).PublicKey()
}

func newAuthority(t testing.TB, ca ssh.Signer, edit func(*Config)) *Authority {
	t.Helper()
	cfg := Config{Domain: testDomain, Now: fixedClock(t0)}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg, ca)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func validRequest(key ssh.PublicKey) Request {
	return Request{
		PublicKey:   key,
		UserID:      "u_123",
		Username:    "alice",
		TokenID:     "jti-0f3c",
		TokenExpiry: t0.Add(2 * time.Hour),
		Claims: Claims{
			AMR:      []string{"pwd", "otp", "mfa"},
			AuthTime: t0.Add(-5 * time.Minute).Unix(),
			Grant:    "authorization_code",
			Scope:    []string{"openid", "ssh"},
		},
	}
}

func sameKey(a, b ssh.PublicKey) bool {
	return a != nil && b != nil && bytes.Equal(a.Marshal(), b.Marshal())
}

// checkerFor trusts ca alone, at clock time at.
func checkerFor(ca ssh.PublicKey, at time.Time) *ssh.CertChecker {
	return &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool { return sameKey(auth, ca) },
		Clock:           fixedClock(at),
	}
}

// connMeta is the little of a connection CertChecker.Authenticate reads.
type connMeta struct{ user string }

func (c connMeta) User() string          { return c.user }
func (c connMeta) SessionID() []byte     { return []byte("session") }
func (c connMeta) ClientVersion() []byte { return []byte("SSH-2.0-test") }
func (c connMeta) ServerVersion() []byte { return []byte("SSH-2.0-test") }
func (c connMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222} }
func (c connMeta) LocalAddr() net.Addr   { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22} }

var _ ssh.ConnMetadata = connMeta{}

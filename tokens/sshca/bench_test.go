package sshca

import (
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkSign compares Authority.Sign with a bare SignCert by the same
// Ed25519 CA on a prepared certificate; the difference is what validation,
// the random serial and the claims JSON cost.
func BenchmarkSign(b *testing.B) {
	ca := newEd25519Signer(b)
	user := newEd25519Key(b)
	req := validRequest(user)

	b.Run("authority", func(b *testing.B) {
		a := newAuthority(b, ca, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Sign(req); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("raw-signcert", func(b *testing.B) {
		a := newAuthority(b, ca, nil)
		prepared, err := a.Sign(req)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			cert := ssh.Certificate{
				Key:             prepared.Key,
				Serial:          prepared.Serial,
				CertType:        prepared.CertType,
				KeyId:           prepared.KeyId,
				ValidPrincipals: prepared.ValidPrincipals,
				ValidAfter:      uint64(t0.Add(-time.Minute).Unix()),
				ValidBefore:     uint64(t0.Add(time.Hour).Unix()),
				Permissions:     prepared.Permissions,
			}
			if err := cert.SignCert(rand.Reader, ca); err != nil {
				b.Fatal(err)
			}
		}
	})
}

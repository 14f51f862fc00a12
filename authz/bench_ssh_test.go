package authz_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkSSHCertificate measures POST /ssh (token check, key parsing,
// signing; handler called in-process) beside a bare ssh.Certificate.SignCert
// with an Ed25519 CA on the same run.
//
//	go test ./authz -run '^$' -bench SSHCertificate -benchtime 3000x
func BenchmarkSSHCertificate(b *testing.B) {
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caKey)
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	user, _ := ssh.NewPublicKey(userPub)
	var raw float64
	b.Run("raw-signcert", func(b *testing.B) {
		for b.Loop() {
			cert := &ssh.Certificate{Key: user, CertType: ssh.UserCert, KeyId: "u_alice", ValidPrincipals: []string{"alice"},
				ValidAfter: uint64(time.Now().Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
			if err := cert.SignCert(rand.Reader, ca); err != nil {
				b.Fatal(err)
			}
		}
		raw = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("post-ssh", func(b *testing.B) {
		ts := newTestServer(b, nil)
		tok, _ := exchange(b, ts, newBrowser(b, ts.Issuer))
		body := keyBody(string(ssh.MarshalAuthorizedKey(user)))
		h := ts.Config.Handler
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/ssh", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		}
		perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(1e9/perOp, "certs/s")
		if raw > 0 {
			b.ReportMetric(perOp/raw, "x-raw-signcert")
		}
	})
}

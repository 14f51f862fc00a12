package authz_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// BenchmarkSSHCertificate measures POST /ssh (token check, key parsing,
// signing; handler called in-process) beside a bare ssh.Certificate.SignCert
// with an Ed25519 CA on the same run. At 3000x each of the 50 people ends
// with 60 live certificates in their ledger.
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
		// Certificates go to 50 people in turn: each person's ledger is
		// rewritten on each issuance, and one person holding thousands of
		// live certificates is neither what people do nor what the
		// MaxLiveCertificates bound allows.
		const people = 50
		ts := newTestServer(b, func(c *authz.Config) {
			for i := range people {
				name := fmt.Sprintf("bench%02d", i)
				c.Users = append(c.Users, authz.User{ID: "u_" + name, Username: name, Email: name + "@example.com",
					PasswordHash: hashOnce(), EmailVerified: true})
			}
		})
		cfg := cliConfig(ts.Issuer, "53682")
		bearers := make([]string, people)
		for i := range bearers {
			br := newBrowser(b, ts.Issuer)
			v := oauth2.GenerateVerifier()
			p := br.login(br.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), fmt.Sprintf("bench%02d", i), alicePassword)
			tok, err := cfg.Exchange(bg, redirectOf(b, p).Query().Get("code"), oauth2.VerifierOption(v))
			if err != nil {
				b.Fatal(err)
			}
			bearers[i] = "Bearer " + tok.AccessToken
		}
		body := keyBody(string(ssh.MarshalAuthorizedKey(user)))
		h := ts.Config.Handler
		i := 0
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/ssh", bytes.NewReader(body))
			req.Header.Set("Authorization", bearers[i%people])
			i++
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

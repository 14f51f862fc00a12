package sshca

import (
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// RSA keys are slow to make; every test in the package shares these.
var (
	rsaOnce          sync.Once
	rsa2048, rsa3072 ssh.PublicKey
	rsaErr           error
)

func rsaKeys(t testing.TB) (weak, strong ssh.PublicKey) {
	t.Helper()
	rsaOnce.Do(func() {
		for _, k := range []struct {
			bits int
			dst  *ssh.PublicKey
		}{{2048, &rsa2048}, {3072, &rsa3072}} {
			priv, err := rsa.GenerateKey(rand.Reader, k.bits)
			if err != nil {
				rsaErr = err
				return
			}
			if *k.dst, err = ssh.NewPublicKey(&priv.PublicKey); err != nil {
				rsaErr = err
				return
			}
		}
	})
	if rsaErr != nil {
		t.Fatal(rsaErr)
	}
	return rsa2048, rsa3072
}

func line(k ssh.PublicKey) string { return authorizedLine(k) }

// rawLine is a key line for an arbitrary wire encoding.
func rawLine(typ string, blob []byte) string {
	return typ + " " + base64.StdEncoding.EncodeToString(blob)
}

func ecdsaKey(t testing.TB, c elliptic.Curve) ssh.PublicKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// skEd25519Line is a FIDO security-key Ed25519 public key line; only the
// hardware can make one, but its public form is the key plus the
// application string.
func skEd25519Line(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blob := ssh.Marshal(struct {
		Type        string
		Key         []byte
		Application string
	}{ssh.KeyAlgoSKED25519, pub, "ssh:"})
	return rawLine(ssh.KeyAlgoSKED25519, blob) + " yubikey"
}

func skECDSALine(t testing.TB) string {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, err := priv.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	blob := ssh.Marshal(struct {
		Type        string
		Curve       string
		Key         []byte
		Application string
	}{ssh.KeyAlgoSKECDSA256, "nistp256", point, "ssh:"})
	return rawLine(ssh.KeyAlgoSKECDSA256, blob)
}

// dsaLine is a DSA key. x/crypto still encodes DSA keys (as deprecated
// "insecure" ones), so the case runs rather than being skipped.
func dsaLine(t testing.TB) string {
	t.Helper()
	var priv dsa.PrivateKey
	if err := dsa.GenerateParameters(&priv.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(&priv, rand.Reader); err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return line(pub)
}

// certLine is a user certificate, as found in id_ed25519-cert.pub.
func certLine(t testing.TB) string {
	t.Helper()
	a := newAuthority(t, newEd25519Signer(t), nil)
	cert, err := a.Sign(validRequest(newEd25519Key(t)))
	if err != nil {
		t.Fatal(err)
	}
	return line(cert)
}

// oversizedRSALine is an RSA key of 16400 bits, beyond what OpenSSH makes.
func oversizedRSALine() string {
	n := new(big.Int).Lsh(big.NewInt(1), 16399)
	n.Add(n, big.NewInt(1))
	blob := ssh.Marshal(struct {
		Type string
		E, N *big.Int
	}{ssh.KeyAlgoRSA, big.NewInt(65537), n})
	return rawLine(ssh.KeyAlgoRSA, blob)
}

func TestParsePublicKeyAccepts(t *testing.T) {
	_, strong := rsaKeys(t)
	ed := newEd25519Key(t)
	tests := []struct {
		name, line string
		typ        string
	}{
		{"ok/ed25519", line(ed), ssh.KeyAlgoED25519},
		{"ok/ed25519-with-comment", line(ed) + " alice@laptop", ssh.KeyAlgoED25519},
		{"ok/ed25519-comment-with-spaces", line(ed) + " Alice's laptop key", ssh.KeyAlgoED25519},
		{"ok/ed25519-trailing-newline", line(ed) + "\n", ssh.KeyAlgoED25519},
		{"ok/ed25519-crlf", line(ed) + " c\r\n", ssh.KeyAlgoED25519},
		{"ok/ed25519-surrounding-blank-lines", "\n\n  " + line(ed) + "\t\n\n", ssh.KeyAlgoED25519},
		{"ok/ed25519-after-comment-line", "# my key\n" + line(ed), ssh.KeyAlgoED25519},
		{"ok/comment-mentions-private-key", line(ed) + " not my PRIVATE KEY", ssh.KeyAlgoED25519},
		{"ok/ecdsa-p256", line(ecdsaKey(t, elliptic.P256())), ssh.KeyAlgoECDSA256},
		{"ok/ecdsa-p384", line(ecdsaKey(t, elliptic.P384())), ssh.KeyAlgoECDSA384},
		{"ok/ecdsa-p521", line(ecdsaKey(t, elliptic.P521())), ssh.KeyAlgoECDSA521},
		{"ok/rsa-3072", line(strong), ssh.KeyAlgoRSA},
		{"ok/sk-ed25519", skEd25519Line(t), ssh.KeyAlgoSKED25519},
		{"ok/sk-ecdsa-p256", skECDSALine(t), ssh.KeyAlgoSKECDSA256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := ParsePublicKey(tt.line)
			if err != nil {
				t.Fatalf("ParsePublicKey: %v", err)
			}
			if pub.Type() != tt.typ {
				t.Errorf("Type = %s, want %s", pub.Type(), tt.typ)
			}
			fields := strings.Fields(tt.line[strings.Index(tt.line, tt.typ):])
			if got := base64.StdEncoding.EncodeToString(pub.Marshal()); got != fields[1] {
				t.Error("the parsed key is not the key sent")
			}
		})
	}

	t.Run("ok/signable", func(t *testing.T) {
		// Every accepted type can be certified.
		a := newAuthority(t, newEd25519Signer(t), nil)
		for _, tt := range tests {
			pub, err := ParsePublicKey(tt.line)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Sign(validRequest(pub)); err != nil {
				t.Errorf("%s: Sign: %v", tt.name, err)
			}
		}
	})
}

func TestParsePublicKeyRefuses(t *testing.T) {
	weak, _ := rsaKeys(t)
	ed := line(newEd25519Key(t))
	edBlob := newEd25519Key(t).Marshal()
	tests := []struct {
		name   string
		line   string
		reason KeyReason
	}{
		{"fail/empty", "", KeyMalformed},
		{"fail/blank", " \t\r\n\n", KeyMalformed},
		{"fail/comment-only", "# nothing here\n", KeyMalformed},
		{"fail/garbage", "hello world", KeyMalformed},
		{"fail/one-word", "ssh-ed25519", KeyMalformed},
		{"fail/bare-base64", base64.StdEncoding.EncodeToString(edBlob), KeyMalformed},
		{"fail/bad-base64", "ssh-ed25519 !!!notbase64!!!", KeyMalformed},
		{"fail/truncated", ed[:len(ed)-8], KeyMalformed},
		{"fail/not-a-key-blob", rawLine("ssh-ed25519", []byte("hello")), KeyMalformed},
		{"fail/trailing-junk-in-blob", rawLine("ssh-ed25519", append(edBlob, 0, 0, 0, 0)), KeyMalformed},
		{"fail/type-mismatch", rawLine("ssh-rsa", edBlob), KeyMalformed},
		{"fail/two-keys-two-lines", ed + "\n" + line(newEd25519Key(t)), KeyMalformed},
		{"fail/two-keys-one-line", ed + " " + line(newEd25519Key(t)), KeyMalformed},
		{"fail/authorized-keys-options", `command="/bin/true",no-pty ` + ed, KeyMalformed},
		{"fail/restrict-option", "restrict " + ed, KeyMalformed},
		{"fail/private-key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n", KeyMalformed},
		{"fail/private-key-pkcs8", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----", KeyMalformed},
		{"fail/putty-private-key", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n", KeyMalformed},
		{"fail/rfc4716", "---- BEGIN SSH2 PUBLIC KEY ----\nAAAAC3NzaC1lZDI1NTE5\n---- END SSH2 PUBLIC KEY ----\n", KeyMalformed},
		{"fail/certificate", certLine(t), KeyIsCertificate},
		{"fail/certificate-type-only", "ssh-ed25519-cert-v01@openssh.com AAAA", KeyIsCertificate},
		{"fail/rsa-2048", line(weak), KeyTooWeak},
		{"fail/dsa", dsaLine(t), KeyUnsupported},
		{"fail/rsa-over-16384", oversizedRSALine(), KeyUnsupported},
		{"fail/ml-dsa", rawLine(ssh.KeyAlgoMLDSA44, ssh.Marshal(struct{ T, K string }{ssh.KeyAlgoMLDSA44, "k"})), KeyUnsupported},
		{"fail/unknown-type", rawLine("ssh-foo", ssh.Marshal(struct{ T, K string }{"ssh-foo", "k"})), KeyUnsupported},
		{"fail/over-16KiB", ed + " " + strings.Repeat("c", MaxPublicKeyInput), KeyTooLarge},
		{"fail/16KiB-of-newlines", ed + strings.Repeat("\n", MaxPublicKeyInput), KeyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := ParsePublicKey(tt.line)
			if err == nil {
				t.Fatalf("ParsePublicKey accepted %s key", pub.Type())
			}
			if pub != nil {
				t.Error("ParsePublicKey returned a key with its error")
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("err = %v (%T), want *KeyError", err, err)
			}
			if ke.Reason != tt.reason {
				t.Errorf("Reason = %v, want %v (%v)", ke.Reason, tt.reason, err)
			}
			checkActionable(t, err)
		})
	}

	t.Run("ok/exactly-16KiB", func(t *testing.T) {
		in := ed + " " + strings.Repeat("c", MaxPublicKeyInput-len(ed)-1)
		if _, err := ParsePublicKey(in); err != nil {
			t.Fatalf("input of exactly %d bytes refused: %v", len(in), err)
		}
	})
}

// checkActionable: a message is a sentence a person can act on.
func checkActionable(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if msg == "" {
		t.Fatal("empty message")
	}
	if !strings.Contains(msg, "ssh-keygen") && !strings.Contains(msg, "Send ") {
		t.Errorf("message does not say what to do: %q", msg)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message spans lines: %q", msg)
	}
	if len(msg) > 400 {
		t.Errorf("message is %d bytes long: %q", len(msg), msg)
	}
}

func TestKeyErrorMessages(t *testing.T) {
	got := (&KeyError{Reason: KeyTooWeak, Detail: "RSA keys must have at least 3072 bits; this one has 2048"}).Error()
	want := "RSA keys must have at least 3072 bits; this one has 2048. Generate one with: ssh-keygen -t ed25519"
	if got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	weak, _ := rsaKeys(t)
	if _, err := ParsePublicKey(line(weak)); err == nil || err.Error() != want {
		t.Errorf("RSA 2048 refused with %v, want %q", err, want)
	}
	for r := KeyMalformed; r <= KeyTooLarge+1; r++ {
		checkActionable(t, &KeyError{Reason: r})
		if strings.HasPrefix(r.String(), "KeyReason(") != (r > KeyTooLarge) {
			t.Errorf("KeyReason(%d).String() = %q", int(r), r)
		}
	}
}

func TestParsePublicKeyQuotesLittleInput(t *testing.T) {
	long := strings.Repeat("x", 1000)
	_, err := ParsePublicKey(long + " AAAA")
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), long[:100]) {
		t.Errorf("message repeats the input at length: %q", err)
	}
}

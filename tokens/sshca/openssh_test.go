package sshca

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// runKeygen runs ssh-keygen with a fixed time zone, so that the validity
// window it prints is UTC.
func runKeygen(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestOpenSSHReadsCertificate signs a certificate for a key made by the
// real ssh-keygen and has ssh-keygen read it back. ssh-keygen -L verifies
// the CA signature while parsing, so this also proves OpenSSH accepts the
// signature and the extension encoding.
func TestOpenSSHReadsCertificate(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "id_ed25519")
	runKeygen(t, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", keyPath)
	pubLine, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(string(pubLine))
	if err != nil {
		t.Fatalf("ParsePublicKey(ssh-keygen's key): %v", err)
	}

	ks, err := NewKeySet(t0, rotateEvery)
	if err != nil {
		t.Fatal(err)
	}
	ca := signerOf(t, ks)
	a := newAuthority(t, ca, nil)
	req := validRequest(pub)
	req.TokenExpiry = t0.Add(45 * time.Minute)
	cert, err := a.Sign(req)
	if err != nil {
		t.Fatal(err)
	}
	certPath := keyPath + "-cert.pub"
	if err := os.WriteFile(certPath, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}

	out := runKeygen(t, keygen, "-L", "-f", certPath)
	t.Logf("ssh-keygen -L:\n%s", out)
	wants := []string{
		"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
		"Signing CA: ED25519 " + ssh.FingerprintSHA256(ca.PublicKey()),
		`Key ID: "u_123"`,
		"Valid: from 2026-03-04T05:05:07 to 2026-03-04T05:51:07",
		"Critical Options: (none)",
		"permit-pty",
		"permit-user-rc",
		"token-claims@" + testDomain,
		"token-id@" + testDomain,
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("ssh-keygen -L output lacks %q", w)
		}
	}
	if !regexp.MustCompile(`Principals:\s*\n\s+alice\n\s+Critical Options`).MatchString(out) {
		t.Error("ssh-keygen -L does not list alice as the one principal")
	}

	// ssh-keygen prints extensions it does not know as the hex of their
	// data, an SSH string: check that it carries exactly our values.
	for name, want := range map[string]string{
		ClaimsExtension(testDomain):  `{"amr":["pwd","otp","mfa"],"auth_time":1772600467,"grant":"authorization_code","scp":["openid","ssh"]}`,
		TokenIDExtension(testDomain): "jti-0f3c",
	} {
		m := regexp.MustCompile(regexp.QuoteMeta(name) + ` UNKNOWN OPTION: ([0-9a-f]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Logf("ssh-keygen does not print the value of %s; only its name was checked", name)
			continue
		}
		data, err := hex.DecodeString(m[1])
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Value string }
		if err := ssh.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: data is not an SSH string: %v", name, err)
		}
		if v.Value != want {
			t.Errorf("%s as OpenSSH reads it = %s, want %s", name, v.Value, want)
		}
	}
}

// TestOpenSSHReadsKeySet checks that the stored CA key is a genuine
// OpenSSH private key: ssh-keygen derives from it the authority line that
// Authorities publishes.
func TestOpenSSHReadsKeySet(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	ks := newKeySet(t)
	path := filepath.Join(t.TempDir(), "ca")
	if err := os.WriteFile(path, []byte(ks.Current), 0o600); err != nil {
		t.Fatal(err)
	}
	out := strings.Fields(runKeygen(t, keygen, "-y", "-f", path))
	if len(out) < 2 {
		t.Fatalf("ssh-keygen -y printed %q", out)
	}
	if got, want := out[0]+" "+out[1], ks.Authorities(t0)[0]; got != want {
		t.Errorf("ssh-keygen -y = %q, want %q", got, want)
	}
}

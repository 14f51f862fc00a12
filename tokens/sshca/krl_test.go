package sshca

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestOpenSSHReadsKRL has the real ssh-keygen -Q judge certificates
// against KRLs written here: revoked serials of the right CA are revoked,
// the same serial from another CA and other serials are not, and an
// empty list is a valid KRL. ssh-keygen -kQl prints what it parsed.
func TestOpenSSHReadsKRL(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	dir := t.TempDir()
	caA, caB := newEd25519Signer(t), newEd25519Signer(t)
	cert := func(name string, ca ssh.Signer) (string, *ssh.Certificate) {
		t.Helper()
		c, err := newAuthority(t, ca, func(c *Config) { c.Now = time.Now }).Sign(func() Request {
			r := validRequest(newEd25519Key(t))
			r.TokenExpiry = time.Now().Add(time.Hour)
			return r
		}())
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+"-cert.pub")
		if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(c), 0o644); err != nil {
			t.Fatal(err)
		}
		return path, c
	}
	revokedPath, revoked := cert("revoked", caA)
	keptPath, kept := cert("kept", caA)
	// The same serial as the revoked one, from another CA.
	otherCA := newAuthority(t, caB, func(c *Config) { c.Now = time.Now })
	p, err := otherCA.validate(func() Request {
		r := validRequest(newEd25519Key(t))
		r.TokenExpiry = time.Now().Add(time.Hour)
		return r
	}(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	twin, err := p.certificate(testDomain)
	if err != nil {
		t.Fatal(err)
	}
	twin.Serial = revoked.Serial
	if err := twin.SignCert(rand.Reader, caB); err != nil {
		t.Fatal(err)
	}
	twinPath := filepath.Join(dir, "twin-cert.pub")
	if err := os.WriteFile(twinPath, ssh.MarshalAuthorizedKey(twin), 0o644); err != nil {
		t.Fatal(err)
	}

	write := func(name string, k KRL) string {
		t.Helper()
		data, err := k.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	query := func(krl, certPath string) (string, bool) {
		t.Helper()
		cmd := exec.Command(keygen, "-Q", "-f", krl, certPath)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return string(out), false
		case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.Contains(string(out), "REVOKED"):
			return string(out), true
		}
		t.Fatalf("ssh-keygen -Q -f %s %s: %v\n%s", krl, certPath, err, out)
		return "", false
	}

	list := write("krl", KRL{
		Version: 7, Generated: time.Unix(1_700_000_000, 0), Comment: "stepup test",
		Revoked: []RevokedSerials{
			// Out of order, duplicated and with a zero: Marshal tidies.
			{CA: caA.PublicKey(), Serials: []uint64{revoked.Serial, 0, kept.Serial + 1, revoked.Serial}},
			{CA: caB.PublicKey(), Serials: nil},
		},
	})
	for _, tc := range []struct {
		name, cert string
		revoked    bool
	}{
		{"fail/listed-serial", revokedPath, true},
		{"ok/other-serial", keptPath, false},
		{"ok/same-serial-other-ca", twinPath, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, got := query(list, tc.cert)
			if got != tc.revoked {
				t.Errorf("ssh-keygen -Q says %q; want revoked=%v", strings.TrimSpace(out), tc.revoked)
			}
		})
	}

	t.Run("ok/empty", func(t *testing.T) {
		empty := write("empty", KRL{Version: 1, Generated: time.Now()})
		for _, c := range []string{revokedPath, keptPath} {
			if out, got := query(empty, c); got {
				t.Errorf("an empty KRL revokes %s: %s", c, out)
			}
		}
	})

	t.Run("ok/as-parsed", func(t *testing.T) {
		// -l lists the KRL as ssh-keygen understood it.
		out, err := exec.Command(keygen, "-Q", "-l", "-f", list).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -Q -l: %v\n%s", err, out)
		}
		t.Logf("ssh-keygen -Q -l:\n%s", out)
		for _, want := range []string{"KRL version 7", "Generated at 2023", "Comment: stepup test", ssh.FingerprintSHA256(caA.PublicKey())} {
			if !strings.Contains(string(out), want) {
				t.Errorf("ssh-keygen -Q -l lacks %q", want)
			}
		}
		if strings.Contains(string(out), ssh.FingerprintSHA256(caB.PublicKey())) {
			t.Error("a CA without serials got a section")
		}
	})
}

func TestKRLRefusesSectionWithoutCA(t *testing.T) {
	if _, err := (KRL{Revoked: []RevokedSerials{{Serials: []uint64{1}}}}).Marshal(); err == nil {
		t.Error("a section without CA key, which would revoke the serial of every CA, was written")
	}
}

func TestKRLHeader(t *testing.T) {
	data, err := KRL{Version: 3, Generated: time.Unix(5, 0)}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("SSHKRL\n\x00" + "\x00\x00\x00\x01" + "\x00\x00\x00\x00\x00\x00\x00\x03" +
		"\x00\x00\x00\x00\x00\x00\x00\x05" + "\x00\x00\x00\x00\x00\x00\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00")
	if !bytes.Equal(data, want) {
		t.Errorf("header = %q, want %q", data, want)
	}
}

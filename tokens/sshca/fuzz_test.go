package sshca

import (
	"bytes"
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// FuzzParsePublicKey: ParsePublicKey never panics, refuses only with a
// *KeyError, and what it accepts re-marshals to a line that parses to the
// same key.
func FuzzParsePublicKey(f *testing.F) {
	ed := line(newEd25519Key(f))
	for _, seed := range []string{
		"",
		"\n",
		"hello world",
		ed,
		ed + " alice@laptop\r\n",
		"# comment\n" + ed,
		ed + "\n" + ed,
		ed + " " + ed,
		"restrict " + ed,
		line(ecdsaKey(f, elliptic.P256())),
		line(ecdsaKey(f, elliptic.P521())),
		skEd25519Line(f),
		skECDSALine(f),
		certLine(f),
		oversizedRSALine(),
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
		"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQ==",
		"-----BEGIN OPENSSH PRIVATE KEY-----",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		pub, err := ParsePublicKey(in)
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %v is a %T, not a *KeyError", err, err)
			}
			if ke.Reason < KeyMalformed || ke.Reason > KeyTooLarge || err.Error() == "" {
				t.Fatalf("bad KeyError %#v", ke)
			}
			if pub != nil {
				t.Fatal("a key came back with the error")
			}
			return
		}
		if pub == nil {
			t.Fatal("no key and no error")
		}
		again := string(ssh.MarshalAuthorizedKey(pub))
		back, err := ParsePublicKey(again)
		if err != nil {
			t.Fatalf("the accepted key re-marshalled as %q does not parse: %v", again, err)
		}
		if !bytes.Equal(back.Marshal(), pub.Marshal()) {
			t.Fatalf("round trip changed the key: %q", again)
		}
		if !strings.Contains(in, strings.Fields(again)[1]) {
			t.Fatalf("accepted a key that is not in the input: %q", again)
		}
	})
}

package seal

import (
	"bytes"
	"errors"
	"testing"
)

const testSecret = "0123456789abcdef-test-secret"

func newBox(t *testing.T, secret string) *Box {
	t.Helper()
	b, err := New(secret)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	b := newBox(t, testSecret)
	for _, plaintext := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("totp secret "), 100)} {
		sealed := b.Seal(plaintext, []byte("user:u_alice:totp"))
		got, err := b.Open(sealed, []byte("user:u_alice:totp"))
		if err != nil {
			t.Fatalf("Open(%d bytes): %v", len(plaintext), err)
		}
		if !bytes.Equal(got, plaintext) {
			t.Fatalf("Open = %q, want %q", got, plaintext)
		}
	}
}

func TestSealIsRandomized(t *testing.T) {
	b := newBox(t, testSecret)
	one := b.Seal([]byte("same"), nil)
	two := b.Seal([]byte("same"), nil)
	if bytes.Equal(one, two) {
		t.Fatal("two seals of the same plaintext are identical; the nonce is not fresh")
	}
	if one[0] != version {
		t.Fatalf("first byte = %d, want version %d", one[0], version)
	}
}

func TestOpenFails(t *testing.T) {
	b := newBox(t, testSecret)
	aad := []byte("keys")
	sealed := b.Seal([]byte("signing key material"), aad)

	flip := func(i int) []byte {
		c := bytes.Clone(sealed)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name   string
		box    *Box
		sealed []byte
		aad    []byte
	}{
		{"fail/wrong-secret", newBox(t, "another secret of enough length"), sealed, aad},
		{"fail/tampered-version", b, flip(0), aad},
		{"fail/tampered-nonce", b, flip(1), aad},
		{"fail/tampered-ciphertext", b, flip(1 + 12), aad},
		{"fail/tampered-tag", b, flip(len(sealed) - 1), aad},
		{"fail/wrong-aad", b, sealed, []byte("totp")},
		{"fail/missing-aad", b, sealed, nil},
		{"fail/appended", b, append(bytes.Clone(sealed), 0), aad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.box.Open(tt.sealed, tt.aad)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", got, err)
			}
		})
	}
}

func TestOpenTruncated(t *testing.T) {
	b := newBox(t, testSecret)
	sealed := b.Seal([]byte("secret"), nil)
	for n := range len(sealed) {
		if _, err := b.Open(sealed[:n], nil); !errors.Is(err, ErrOpen) {
			t.Fatalf("Open(first %d of %d bytes) error = %v, want ErrOpen", n, len(sealed), err)
		}
	}
	if _, err := b.Open(nil, nil); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open(nil) error = %v, want ErrOpen", err)
	}
}

func TestShortSecretRefused(t *testing.T) {
	for _, secret := range []string{"", "short", "fifteen bytes.."} {
		if _, err := New(secret); err == nil {
			t.Errorf("New(%q) succeeded, want an error", secret)
		}
	}
	if _, err := New("sixteen bytes..."); err != nil {
		t.Errorf("New with a 16-byte secret: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	b, err := New(testSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b.Seal([]byte("seed"), nil))
	f.Add([]byte{})
	f.Add([]byte{version})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		// Anything not made by Seal must be refused without a panic.
		if _, err := b.Open(sealed, []byte("aad")); err == nil {
			t.Fatalf("Open accepted forged input %x", sealed)
		}
	})
}

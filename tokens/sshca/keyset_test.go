package sshca

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	rotateEvery = 24 * time.Hour
	overlap     = 2 * time.Hour
)

func newKeySet(t testing.TB) *KeySet {
	t.Helper()
	ks, err := NewKeySet(t0, rotateEvery)
	if err != nil {
		t.Fatalf("NewKeySet: %v", err)
	}
	return ks
}

func signerOf(t testing.TB, ks *KeySet) ssh.Signer {
	t.Helper()
	s, err := ks.Signer()
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	return s
}

// signAndCheck signs a certificate with the set's current key and checks
// it against the set's authorities at t0, as a gateway would.
func signAndCheck(t *testing.T, ks *KeySet) *ssh.Certificate {
	t.Helper()
	a := newAuthority(t, signerOf(t, ks), nil)
	cert, err := a.Sign(validRequest(newEd25519Key(t)))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	trusted := ks.Authorities(t0)
	checker := &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool {
			return slices.Contains(trusted, authorizedLine(auth))
		},
		Clock: fixedClock(t0),
	}
	if _, err := checker.Authenticate(connMeta{"alice"}, cert); err != nil {
		t.Fatalf("certificate does not verify against Authorities: %v", err)
	}
	return cert
}

func TestNewKeySet(t *testing.T) {
	ks := newKeySet(t)
	if !strings.HasPrefix(ks.Current, "-----BEGIN OPENSSH PRIVATE KEY-----\n") {
		t.Errorf("Current is not an OpenSSH private key: %.40q", ks.Current)
	}
	if got := signerOf(t, ks).PublicKey().Type(); got != ssh.KeyAlgoED25519 {
		t.Errorf("CA key type = %s, want ssh-ed25519", got)
	}
	if !ks.NextRotation.Equal(t0.Add(rotateEvery)) {
		t.Errorf("NextRotation = %v, want %v", ks.NextRotation, t0.Add(rotateEvery))
	}
	auths := ks.Authorities(t0)
	if want := []string{authorizedLine(signerOf(t, ks).PublicKey()), nextLine(t, ks)}; !slices.Equal(auths, want) || want[0] == want[1] {
		t.Errorf("Authorities = %q, want the current key, then the next one: %q", auths, want)
	}
	if strings.Contains(auths[0], "\n") || strings.Count(auths[0], " ") != 1 {
		t.Errorf("authority line %q is not \"type base64\"", auths[0])
	}
	signAndCheck(t, ks)

	if _, err := NewKeySet(t0, 0); err == nil {
		t.Error("NewKeySet with a zero rotation period succeeded")
	}
}

func TestKeySetJSONRoundTrip(t *testing.T) {
	ks := newKeySet(t)
	if err := ks.Rotate(t0, rotateEvery, overlap); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ks)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"current":`, `"next":`, `"previous":`, `"public_key":`, `"trusted_until":`, `"next_rotation":`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON lacks %s: %s", field, b)
		}
	}
	var back KeySet
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !sameKey(signerOf(t, &back).PublicKey(), signerOf(t, ks).PublicKey()) {
		t.Error("the decoded set has another current key")
	}
	if !slices.Equal(back.Authorities(t0), ks.Authorities(t0)) {
		t.Errorf("Authorities after round trip = %q, want %q", back.Authorities(t0), ks.Authorities(t0))
	}
	if !back.NextRotation.Equal(ks.NextRotation) {
		t.Errorf("NextRotation = %v, want %v", back.NextRotation, ks.NextRotation)
	}
	signAndCheck(t, &back)
}

// nextLine is the authority line of the set's next key.
func nextLine(t *testing.T, ks *KeySet) string {
	t.Helper()
	s, err := ssh.ParsePrivateKey([]byte(ks.Next))
	if err != nil {
		t.Fatalf("Next is not a private key: %v", err)
	}
	return authorizedLine(s.PublicKey())
}

func TestKeySetRotate(t *testing.T) {
	ks := newKeySet(t)
	first := signerOf(t, ks).PublicKey()
	published := nextLine(t, ks)

	if ks.RotationDue(t0.Add(rotateEvery - time.Second)) {
		t.Error("rotation due before NextRotation")
	}
	if !ks.RotationDue(t0.Add(rotateEvery)) {
		t.Error("rotation not due at NextRotation")
	}

	t1 := t0.Add(rotateEvery)
	if err := ks.Rotate(t1, rotateEvery, overlap); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	second := signerOf(t, ks).PublicKey()
	if sameKey(first, second) {
		t.Fatal("Rotate kept the same key")
	}
	if authorizedLine(second) != published {
		t.Fatal("Rotate did not make current the key listed as next beforehand")
	}
	upcoming := nextLine(t, ks)
	if upcoming == published || upcoming == authorizedLine(first) {
		t.Fatal("Rotate did not make a new next key")
	}
	if second.Type() != ssh.KeyAlgoED25519 {
		t.Errorf("rotated key type = %s, want ssh-ed25519", second.Type())
	}
	if ks.RotationDue(t1) || !ks.NextRotation.Equal(t1.Add(rotateEvery)) {
		t.Errorf("NextRotation = %v, want %v", ks.NextRotation, t1.Add(rotateEvery))
	}

	// The new key signs.
	a := newAuthority(t, signerOf(t, ks), nil)
	cert, err := a.Sign(validRequest(newEd25519Key(t)))
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(cert.SignatureKey, second) {
		t.Error("certificate after rotation is not signed by the new key")
	}

	all := []string{authorizedLine(second), upcoming, authorizedLine(first)}
	for _, tc := range []struct {
		name string
		at   time.Time
		want []string
	}{
		{"ok/right-after-rotation", t1, all},
		{"ok/last-second-of-overlap", t1.Add(overlap - time.Second), all},
		{"ok/overlap-over", t1.Add(overlap), all[:2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ks.Authorities(tc.at); !slices.Equal(got, tc.want) {
				t.Errorf("Authorities(%v) = %q, want %q", tc.at, got, tc.want)
			}
		})
	}

	// A second rotation within the overlap keeps both old keys, newest
	// first; a third one after it drops the expired one.
	t2 := t1.Add(time.Hour)
	if err := ks.Rotate(t2, rotateEvery, overlap); err != nil {
		t.Fatal(err)
	}
	third := signerOf(t, ks).PublicKey()
	want := []string{authorizedLine(third), nextLine(t, ks), authorizedLine(second), authorizedLine(first)}
	if got := ks.Authorities(t2); !slices.Equal(got, want) {
		t.Errorf("Authorities after second rotation = %q, want %q", got, want)
	}
	t3 := t2.Add(overlap)
	if err := ks.Rotate(t3, rotateEvery, overlap); err != nil {
		t.Fatal(err)
	}
	if len(ks.Previous) != 1 || ks.Previous[0].PublicKey != authorizedLine(third) {
		t.Errorf("Previous after third rotation = %+v, want the third key alone", ks.Previous)
	}
}

func TestKeySetRotateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		rotateEvery, overlap time.Duration
	}{
		{"fail/zero-period", 0, overlap},
		{"fail/zero-overlap", rotateEvery, 0},
		{"fail/negative-overlap", rotateEvery, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks := newKeySet(t)
			before := *ks
			if err := ks.Rotate(t0, tc.rotateEvery, tc.overlap); err == nil {
				t.Fatal("Rotate succeeded")
			}
			if ks.Current != before.Current || len(ks.Previous) != 0 || !ks.NextRotation.Equal(before.NextRotation) {
				t.Error("a refused Rotate changed the set")
			}
		})
	}
	t.Run("fail/damaged-current", func(t *testing.T) {
		ks := &KeySet{Current: "not a key", NextRotation: t0}
		if err := ks.Rotate(t0, rotateEvery, overlap); err == nil {
			t.Fatal("Rotate of a damaged set succeeded")
		}
		if ks.Current != "not a key" {
			t.Error("a refused Rotate changed the set")
		}
	})
}

func TestKeySetDamaged(t *testing.T) {
	ks := newKeySet(t)
	if err := ks.Rotate(t0, rotateEvery, overlap); err != nil {
		t.Fatal(err)
	}
	cur := authorizedLine(signerOf(t, ks).PublicKey())
	next := nextLine(t, ks)
	good := ks.Previous[0].PublicKey
	ks.Previous = append(ks.Previous,
		PreviousKey{PublicKey: "ssh-ed25519 !!!", TrustedUntil: t0.Add(time.Hour)},
		PreviousKey{PublicKey: "", TrustedUntil: t0.Add(time.Hour)},
	)
	if got, want := ks.Authorities(t0), []string{cur, next, good}; !slices.Equal(got, want) {
		t.Errorf("Authorities = %q, want %q (damaged entries left out)", got, want)
	}

	for _, cur := range []string{"", "garbage", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"} {
		bad := &KeySet{Current: cur, Previous: ks.Previous}
		if _, err := bad.Signer(); err == nil {
			t.Errorf("Signer of Current %q succeeded", cur)
		}
		if got := bad.Authorities(t0); !slices.Equal(got, []string{good}) {
			t.Errorf("Authorities with damaged Current = %q, want the previous key alone", got)
		}
	}
}

func TestKeySetECDSA(t *testing.T) {
	// An operator may import an ECDSA CA key (without a next key);
	// rotation keeps its type.
	pemKey, err := newCAKey(ssh.KeyAlgoECDSA384)
	if err != nil {
		t.Fatal(err)
	}
	ks := &KeySet{Current: pemKey, NextRotation: t0}
	if got := len(ks.Authorities(t0)); got != 1 {
		t.Errorf("%d authorities before rotation, want the current key alone", got)
	}
	signAndCheck(t, ks)
	if err := ks.Rotate(t0, rotateEvery, overlap); err != nil {
		t.Fatal(err)
	}
	if got := signerOf(t, ks).PublicKey().Type(); got != ssh.KeyAlgoECDSA384 {
		t.Errorf("rotated key type = %s, want %s", got, ssh.KeyAlgoECDSA384)
	}
	if got := len(ks.Authorities(t0)); got != 3 {
		t.Errorf("%d authorities, want current, next and previous", got)
	}
	if next, err := ssh.ParsePrivateKey([]byte(ks.Next)); err != nil || next.PublicKey().Type() != ssh.KeyAlgoECDSA384 {
		t.Errorf("next key after rotation: %v, want %s", err, ssh.KeyAlgoECDSA384)
	}
	signAndCheck(t, ks)
}

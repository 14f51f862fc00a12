package tokens

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	t0      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	allAlgs = []string{ES256, RS256, EdDSA}
)

const (
	rotateEvery = 24 * time.Hour
	retain      = 2 * time.Hour
)

func newSet(t testing.TB, algs ...string) *KeySet {
	t.Helper()
	ks, err := NewKeySet(algs, t0, rotateEvery)
	if err != nil {
		t.Fatalf("NewKeySet(%v): %v", algs, err)
	}
	return ks
}

func currentKIDs(ks *KeySet) []string {
	var kids []string
	for _, k := range ks.Current {
		kids = append(kids, k.KeyID)
	}
	return kids
}

func jwksKIDs(set jose.JSONWebKeySet) []string {
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

func TestNewKeySetOneKeyPerAlg(t *testing.T) {
	ks := newSet(t, allAlgs...)
	if got := ks.Algorithms(); !slices.Equal(got, allAlgs) {
		t.Fatalf("Algorithms() = %v, want %v", got, allAlgs)
	}
	if len(ks.Current) != len(allAlgs) {
		t.Fatalf("%d current keys, want %d", len(ks.Current), len(allAlgs))
	}
	seen := map[string]bool{}
	for i, k := range ks.Current {
		if k.Algorithm != allAlgs[i] {
			t.Errorf("key %d alg = %q, want %q", i, k.Algorithm, allAlgs[i])
		}
		if k.IsPublic() || !keyFits(k.Algorithm, k.Key) {
			t.Errorf("key %d (%s) is %T, want a private key for its alg", i, k.Algorithm, k.Key)
		}
		if k.KeyID == "" || seen[k.KeyID] {
			t.Errorf("key %d kid %q is empty or repeated", i, k.KeyID)
		}
		seen[k.KeyID] = true
	}
	if len(ks.Retired) != 0 {
		t.Errorf("new set has %d retired keys", len(ks.Retired))
	}
	if !ks.NextRotation.Equal(t0.Add(rotateEvery)) {
		t.Errorf("NextRotation = %v, want %v", ks.NextRotation, t0.Add(rotateEvery))
	}
	if ks.RotationDue(t0.Add(rotateEvery - time.Second)) {
		t.Error("RotationDue before NextRotation")
	}
	if !ks.RotationDue(t0.Add(rotateEvery)) {
		t.Error("not RotationDue at NextRotation")
	}
}

func TestNewKeySetRefuses(t *testing.T) {
	tests := []struct {
		name  string
		algs  []string
		every time.Duration
		want  string
	}{
		{"fail/unknown-alg", []string{ES256, "HS256"}, rotateEvery, `"HS256"`},
		{"fail/none", []string{"none"}, rotateEvery, `"none"`},
		{"fail/lowercase", []string{"es256"}, rotateEvery, `"es256"`},
		{"fail/duplicate", []string{EdDSA, EdDSA}, rotateEvery, `"EdDSA"`},
		{"fail/no-algs", nil, rotateEvery, "no signing algorithms"},
		{"fail/zero-period", []string{ES256}, 0, "rotation period"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := NewKeySet(tt.algs, t0, tt.every)
			if err == nil {
				t.Fatalf("NewKeySet succeeded with %d keys", len(ks.Current))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %s", err, tt.want)
			}
		})
	}
}

func TestKeySetJSONRoundTrip(t *testing.T) {
	ks := newSet(t, allAlgs...)
	before := map[string]string{}
	for _, alg := range allAlgs {
		before[alg] = mustSign(t, ks, alg, []byte(`{"sub":"u_alice"}`), TypAccessToken)
	}
	// A retired key must survive the trip too.
	if err := ks.Rotate(t0, rotateEvery, retain); err != nil {
		t.Fatal(err)
	}

	data, err := json.Marshal(ks)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	var back KeySet
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}

	if !slices.Equal(back.Algorithms(), allAlgs) {
		t.Fatalf("Algorithms after round trip = %v", back.Algorithms())
	}
	if !slices.Equal(currentKIDs(&back), currentKIDs(ks)) {
		t.Fatalf("current kids changed: %v, want %v", currentKIDs(&back), currentKIDs(ks))
	}
	if !back.NextRotation.Equal(ks.NextRotation) || len(back.Retired) != len(ks.Retired) {
		t.Fatalf("rotation state changed: next %v, %d retired; want %v, %d",
			back.NextRotation, len(back.Retired), ks.NextRotation, len(ks.Retired))
	}
	for _, alg := range allAlgs {
		// Signed by a now-retired key before the trip.
		if _, _, err := back.Verify(before[alg], t0); err != nil {
			t.Errorf("%s: token from before the round trip: %v", alg, err)
		}
		// The private keys came back usable, and the original set accepts
		// what they sign.
		tok := mustSign(t, &back, alg, []byte(`{"sub":"u_bob"}`), TypIDToken)
		if _, _, err := ks.Verify(tok, t0); err != nil {
			t.Errorf("%s: token signed after the round trip: %v", alg, err)
		}
	}
}

func TestRotateKeepsOldKeysUntilRetainPasses(t *testing.T) {
	ks := newSet(t, ES256, EdDSA)
	oldKIDs := currentKIDs(ks)
	var published []string // the next keys, published before they sign
	for _, k := range ks.Next {
		published = append(published, k.KeyID)
	}
	if got := jwksKIDs(ks.PublicJWKS(t0)); !slices.Equal(got, slices.Concat(oldKIDs, published)) || len(published) != 2 {
		t.Fatalf("a new set publishes %v, want its current %v and next %v keys", got, oldKIDs, published)
	}

	rotatedAt := t0.Add(rotateEvery)
	if err := ks.Rotate(rotatedAt, rotateEvery, retain); err != nil {
		t.Fatal(err)
	}
	newKIDs := currentKIDs(ks)
	if !slices.Equal(newKIDs, published) {
		t.Errorf("Rotate made %v current, want the keys published beforehand %v", newKIDs, published)
	}
	var nextKIDs []string
	for _, k := range ks.Next {
		nextKIDs = append(nextKIDs, k.KeyID)
		if slices.Contains(oldKIDs, k.KeyID) || slices.Contains(newKIDs, k.KeyID) || k.IsPublic() {
			t.Errorf("next key %q is not a new private key", k.KeyID)
		}
	}
	if !slices.Equal(ks.Algorithms(), []string{ES256, EdDSA}) {
		t.Errorf("Algorithms after Rotate = %v", ks.Algorithms())
	}
	if !ks.NextRotation.Equal(rotatedAt.Add(rotateEvery)) {
		t.Errorf("NextRotation = %v, want %v", ks.NextRotation, rotatedAt.Add(rotateEvery))
	}

	tests := []struct {
		name   string
		at     time.Time
		oldToo bool
	}{
		{"ok/at-rotation", rotatedAt, true},
		{"ok/just-before-retain", rotatedAt.Add(retain - time.Second), true},
		{"ok/at-retain", rotatedAt.Add(retain), false},
		{"ok/after-retain", rotatedAt.Add(retain + time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := slices.Concat(newKIDs, nextKIDs)
			if tt.oldToo {
				want = append(want, oldKIDs...)
			}
			if got := jwksKIDs(ks.PublicJWKS(tt.at)); !slices.Equal(got, want) {
				t.Errorf("PublicJWKS kids = %v, want %v", got, want)
			}
			for _, kid := range newKIDs {
				if _, ok := ks.VerificationKey(kid, tt.at); !ok {
					t.Errorf("VerificationKey(current %q) not found", kid)
				}
			}
			for _, kid := range oldKIDs {
				if _, ok := ks.VerificationKey(kid, tt.at); ok != tt.oldToo {
					t.Errorf("VerificationKey(retired %q) found = %v, want %v", kid, ok, tt.oldToo)
				}
			}
		})
	}

	// The next rotation drops the expired keys from the record itself.
	secondAt := rotatedAt.Add(rotateEvery)
	if err := ks.Rotate(secondAt, rotateEvery, retain); err != nil {
		t.Fatal(err)
	}
	var retired []string
	for _, r := range ks.Retired {
		retired = append(retired, r.Key.KeyID)
	}
	if !slices.Equal(retired, newKIDs) {
		t.Errorf("retired after second rotation = %v, want only %v", retired, newKIDs)
	}
}

func TestRotateRefusesBadDurations(t *testing.T) {
	ks := newSet(t, EdDSA)
	kids := currentKIDs(ks)
	for _, d := range []struct{ every, retain time.Duration }{{0, retain}, {rotateEvery, 0}, {rotateEvery, -time.Hour}} {
		if err := ks.Rotate(t0, d.every, d.retain); err == nil {
			t.Errorf("Rotate(every %v, retain %v) succeeded", d.every, d.retain)
		}
	}
	if !slices.Equal(currentKIDs(ks), kids) || len(ks.Retired) != 0 {
		t.Error("a refused Rotate changed the set")
	}
}

func TestPublicJWKSHasNoPrivateMaterial(t *testing.T) {
	ks := newSet(t, allAlgs...)
	if err := ks.Rotate(t0, rotateEvery, retain); err != nil {
		t.Fatal(err)
	}
	set := ks.PublicJWKS(t0)
	if len(set.Keys) != 3*len(allAlgs) { // current, next and retired
		t.Fatalf("%d keys published, want %d", len(set.Keys), 3*len(allAlgs))
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Errorf("key %q (%s) is %T, not public", k.KeyID, k.Algorithm, k.Key)
		}
		if k.KeyID == "" || k.Algorithm == "" || k.Use != "sig" {
			t.Errorf("key %q: alg %q use %q; want kid, alg and use sig", k.KeyID, k.Algorithm, k.Use)
		}
	}

	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range raw.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Errorf("published key %v has private member %q", k["kid"], private)
			}
		}
	}

	for _, kid := range currentKIDs(ks) {
		k, ok := ks.VerificationKey(kid, t0)
		if !ok || !k.IsPublic() {
			t.Errorf("VerificationKey(%q) = %T, %v; want a public key", kid, k.Key, ok)
		}
	}
}

func TestSignerUnknownAlg(t *testing.T) {
	ks := newSet(t, ES256)
	_, err := ks.Signer(RS256)
	if err == nil || !strings.Contains(err.Error(), RS256) {
		t.Fatalf("Signer(RS256) on an ES256 set: error %v, want one naming RS256", err)
	}
}

func TestSignerRefusesDamagedKey(t *testing.T) {
	ks := newSet(t, ES256, EdDSA)
	// An edited record that labels the Ed25519 key as ES256.
	ks.Current[1].Algorithm = ES256
	ks.Current = ks.Current[1:]
	if _, err := ks.Signer(ES256); err == nil {
		t.Fatal("Signer accepted an Ed25519 key labelled ES256")
	}
	if _, err := ks.Signer(EdDSA); err == nil {
		t.Fatal("Signer(EdDSA) found a key after relabelling")
	}
}

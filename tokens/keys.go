// Package tokens holds what both the authorization server and resource
// servers need to agree on about tokens: signing keys and their JWKS,
// signing and verifying JWTs. It must not import fosite or authz, so that
// resource servers can import it alone.
package tokens

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Supported algorithms.
const (
	ES256 = "ES256"
	RS256 = "RS256"
	EdDSA = "EdDSA"
)

// rsaBits is fixed rather than configurable: 2048 is what verifiers expect
// for RS256, and larger keys only slow down every signature.
const rsaBits = 2048

// KeySet is one record: the current signing key per algorithm, the keys
// that will replace them, the retired public keys still published with the
// time until which they verify, and when the next rotation is due. Keeping
// them together lets replicas read and rotate it as one value under one
// atomic update.
//
// It round-trips through encoding/json with the private keys included, so
// the caller must seal it before storing it. It is a plain value with no
// lock: readers may share one, but Rotate needs a copy of its own (the
// store's update of the record gives it one).
type KeySet struct {
	// Current holds the signing keys, private parts included, one per
	// algorithm, in the order the algorithms were configured.
	Current []jose.JSONWebKey `json:"current"`
	// Next holds the keys the next rotation makes current. They are
	// published a whole rotation period before they sign anything, so every
	// replica's cached key set and every verifier's cached JWKS already
	// holds a key by the time a token signed with it arrives.
	Next []jose.JSONWebKey `json:"next,omitempty"`
	// Retired holds former signing keys, public parts only.
	Retired []RetiredKey `json:"retired,omitempty"`
	// NextRotation is when Rotate should next run.
	NextRotation time.Time `json:"next_rotation"`
}

// RetiredKey is a former signing key that still verifies what it signed.
type RetiredKey struct {
	Key jose.JSONWebKey `json:"key"`
	// Expires is when the longest-lived thing the key signed has expired;
	// from then on the key is neither published nor used.
	Expires time.Time `json:"expires"`
}

// NewKeySet makes one fresh key for each algorithm in algs. The first
// algorithm is the caller's default; Algorithms keeps the order.
func NewKeySet(algs []string, now time.Time, rotateEvery time.Duration) (*KeySet, error) {
	if len(algs) == 0 {
		return nil, errors.New("tokens: no signing algorithms configured")
	}
	if rotateEvery <= 0 {
		return nil, fmt.Errorf("tokens: rotation period must be positive, got %v", rotateEvery)
	}
	for i, alg := range algs {
		if slices.Contains(algs[:i], alg) {
			return nil, fmt.Errorf("tokens: signing algorithm %q configured twice", alg)
		}
	}
	current, err := newKeys(algs)
	if err != nil {
		return nil, err
	}
	next, err := newKeys(algs)
	if err != nil {
		return nil, err
	}
	return &KeySet{Current: current, Next: next, NextRotation: now.Add(rotateEvery)}, nil
}

func newKeys(algs []string) ([]jose.JSONWebKey, error) {
	keys := make([]jose.JSONWebKey, 0, len(algs))
	for _, alg := range algs {
		k, err := newKey(alg)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// RotationDue reports whether Rotate should run at now.
func (ks *KeySet) RotationDue(now time.Time) bool {
	return !now.Before(ks.NextRotation)
}

// Rotate makes the next keys current and makes new next keys. (A record
// stored before next keys existed gets new current keys.) The old public keys stay published and verifying until now+retain, so
// retain must be at least the longest lifetime of anything they signed
// (plus any clock skew the caller allows). Retired keys whose time has
// passed are dropped. On error the set is left unchanged.
func (ks *KeySet) Rotate(now time.Time, rotateEvery, retain time.Duration) error {
	if rotateEvery <= 0 {
		return fmt.Errorf("tokens: rotation period must be positive, got %v", rotateEvery)
	}
	// A zero retain would unpublish keys whose tokens are still live; that
	// is always a configuration mistake, never a choice.
	if retain <= 0 {
		return fmt.Errorf("tokens: retention must be positive, got %v", retain)
	}
	algs := ks.Algorithms()
	promoted := make([]jose.JSONWebKey, 0, len(algs))
	for _, alg := range algs {
		i := slices.IndexFunc(ks.Next, func(k jose.JSONWebKey) bool { return k.Algorithm == alg })
		if i < 0 {
			k, err := newKey(alg)
			if err != nil {
				return err
			}
			promoted = append(promoted, k)
			continue
		}
		promoted = append(promoted, ks.Next[i])
	}
	next, err := newKeys(algs)
	if err != nil {
		return err
	}

	retired := make([]RetiredKey, 0, len(ks.Retired)+len(ks.Current))
	for _, r := range ks.Retired {
		if now.Before(r.Expires) {
			retired = append(retired, r)
		}
	}
	for _, k := range ks.Current {
		pub := k.Public()
		if !pub.IsPublic() {
			return fmt.Errorf("tokens: current key %q has no public part", k.KeyID)
		}
		retired = append(retired, RetiredKey{Key: pub, Expires: now.Add(retain)})
	}

	ks.Current, ks.Next = promoted, next
	ks.Retired = retired
	ks.NextRotation = now.Add(rotateEvery)
	return nil
}

// Signer returns a signer for the current key of alg.
//
// A Signer caches its encoded headers (and, for RSA, the precomputed
// private key), so callers keep it until the next rotation rather than
// asking for one per token.
func (ks *KeySet) Signer(alg string) (*Signer, error) {
	for _, k := range ks.Current {
		if k.Algorithm == alg {
			return newSigner(k)
		}
	}
	return nil, fmt.Errorf("tokens: no signing key for algorithm %q", alg)
}

// Algorithms lists the algorithms of the current keys, default first.
func (ks *KeySet) Algorithms() []string {
	algs := make([]string, len(ks.Current))
	for i, k := range ks.Current {
		algs[i] = k.Algorithm
	}
	return algs
}

// PublicJWKS returns the current and next keys and the retired keys that
// have not expired at now, public parts only, each with kid, alg and use "sig".
func (ks *KeySet) PublicJWKS(now time.Time) jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	ks.eachVerificationKey(now, func(k jose.JSONWebKey) bool {
		set.Keys = append(set.Keys, k)
		return true
	})
	return set
}

// VerificationKey returns the public key for kid if it is current, next
// (another replica may have rotated already), or retired but not expired
// at now.
func (ks *KeySet) VerificationKey(kid string, now time.Time) (jose.JSONWebKey, bool) {
	var found jose.JSONWebKey
	ok := false
	ks.eachVerificationKey(now, func(k jose.JSONWebKey) bool {
		if k.KeyID == kid {
			found, ok = k, true
			return false
		}
		return true
	})
	return found, ok
}

// eachVerificationKey is the one place that decides which keys verify at
// now, so that the published JWKS and Verify cannot disagree. The rule is
// applied on read as well as in Rotate because a stored set may not have
// been rotated for longer than its retired keys live.
func (ks *KeySet) eachVerificationKey(now time.Time, yield func(jose.JSONWebKey) bool) {
	for _, k := range slices.Concat(ks.Current, ks.Next) {
		pub := k.Public()
		// A record whose key has no usable public part (damaged storage)
		// must never leak what it does have.
		if !pub.IsPublic() {
			continue
		}
		pub.Use = "sig"
		if !yield(pub) {
			return
		}
	}
	for _, r := range ks.Retired {
		if !now.Before(r.Expires) {
			continue
		}
		pub := r.Key.Public()
		if !pub.IsPublic() {
			continue
		}
		pub.Use = "sig"
		if !yield(pub) {
			return
		}
	}
}

func newKey(alg string) (jose.JSONWebKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return jose.JSONWebKey{}, fmt.Errorf("tokens: unsupported signing algorithm %q (supported: %s, %s, %s)", alg, ES256, RS256, EdDSA)
	}
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("tokens: generate %s key: %w", alg, err)
	}
	k := jose.JSONWebKey{Key: priv, Algorithm: alg, Use: "sig"}
	// The RFC 7638 thumbprint is unique per key without a registry of
	// issued ids, and lets anyone holding the public key recompute it.
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("tokens: thumbprint of %s key: %w", alg, err)
	}
	k.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return k, nil
}

// keyFits reports whether key (public or private) is of the type alg
// needs. A stored set is data from outside this process; checking it here
// keeps a damaged or edited record from producing tokens under a header
// alg that does not match the key.
func keyFits(alg string, key any) bool {
	switch alg {
	case ES256:
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			return k.Curve == elliptic.P256()
		case *ecdsa.PublicKey:
			return k.Curve == elliptic.P256()
		}
	case RS256:
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k.N.BitLen() >= rsaBits
		case *rsa.PublicKey:
			return k.N.BitLen() >= rsaBits
		}
	case EdDSA:
		switch key.(type) {
		case ed25519.PrivateKey, ed25519.PublicKey:
			return true
		}
	}
	return false
}

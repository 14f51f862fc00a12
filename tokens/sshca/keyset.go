package sshca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// caKeyComment is written into the OpenSSH private key, so an operator who
// extracts one (ssh-keygen -y -f) can tell what it is.
const caKeyComment = "stepup-user-ca"

// KeySet is the CA key material as one record: the current signing key,
// the key that will replace it, the previous public keys still trusted and
// until when, and when the next rotation is due. Keeping them together lets replicas read and rotate the
// CA as one value under one atomic update of the store.
//
// It round-trips through encoding/json with the private key included, so
// the caller must seal it before storing it. It is a plain value without a
// lock: readers may share one, but Rotate needs a copy of its own.
type KeySet struct {
	// Current is the signing key as an OpenSSH private key
	// ("-----BEGIN OPENSSH PRIVATE KEY-----", unencrypted): Ed25519 as made
	// by NewKeySet, or ECDSA where an operator imported one.
	Current string `json:"current"`
	// Next is the key the next rotation makes current, in the same form.
	// It is listed as an authority a whole rotation period before it signs,
	// so a plain sshd whose TrustedUserCAKeys file is refreshed daily, or a
	// gateway holding an old list, already trusts it on the first
	// certificate.
	Next string `json:"next,omitempty"`
	// Previous are former CA keys, public parts only.
	Previous []PreviousKey `json:"previous,omitempty"`
	// NextRotation is when Rotate should next run.
	NextRotation time.Time `json:"next_rotation"`
}

// PreviousKey is a former CA key that gateways still trust.
type PreviousKey struct {
	// PublicKey is one authorized_keys-format line, without comment.
	PublicKey string `json:"public_key"`
	// TrustedUntil is when the last certificate the key signed has
	// expired; from then on it is no longer listed.
	TrustedUntil time.Time `json:"trusted_until"`
}

// NewKeySet makes a set with a fresh Ed25519 key, due for rotation at
// now+rotateEvery.
func NewKeySet(now time.Time, rotateEvery time.Duration) (*KeySet, error) {
	if rotateEvery <= 0 {
		return nil, fmt.Errorf("sshca: rotation period must be positive, got %v", rotateEvery)
	}
	cur, err := newCAKey(ssh.KeyAlgoED25519)
	if err != nil {
		return nil, err
	}
	next, err := newCAKey(ssh.KeyAlgoED25519)
	if err != nil {
		return nil, err
	}
	return &KeySet{Current: cur, Next: next, NextRotation: now.Add(rotateEvery)}, nil
}

// RotationDue reports whether Rotate should run at now.
func (ks *KeySet) RotationDue(now time.Time) bool {
	return !now.Before(ks.NextRotation)
}

// Rotate makes the next key current (a new one of the same type when the
// record has none, as one stored before next keys existed) and makes a new
// next key. The old public key stays trusted until now+overlap, so overlap must be at least
// the longest certificate lifetime (Config.MaxTTL) plus however long
// gateways cache the authority list. Previous keys whose time has passed
// are dropped. On error the set is left unchanged.
func (ks *KeySet) Rotate(now time.Time, rotateEvery, overlap time.Duration) error {
	if rotateEvery <= 0 {
		return fmt.Errorf("sshca: rotation period must be positive, got %v", rotateEvery)
	}
	// A zero overlap would distrust certificates that are still live; that
	// is always a configuration mistake, never a choice.
	if overlap <= 0 {
		return fmt.Errorf("sshca: overlap must be positive, got %v", overlap)
	}
	old, err := ks.Signer()
	if err != nil {
		return err
	}
	promoted := ks.Next
	if promoted == "" {
		if promoted, err = newCAKey(old.PublicKey().Type()); err != nil {
			return err
		}
	}
	next, err := newCAKey(old.PublicKey().Type())
	if err != nil {
		return err
	}
	prev := make([]PreviousKey, 0, len(ks.Previous)+1)
	for _, p := range ks.Previous {
		if now.Before(p.TrustedUntil) {
			prev = append(prev, p)
		}
	}
	prev = append(prev, PreviousKey{PublicKey: authorizedLine(old.PublicKey()), TrustedUntil: now.Add(overlap)})

	ks.Current, ks.Next = promoted, next
	ks.Previous = prev
	ks.NextRotation = now.Add(rotateEvery)
	return nil
}

// Authorities returns the CA public keys gateways should trust at now, as
// authorized_keys-format lines without comment (for TrustedUserCAKeys or
// ssh.CertChecker): the current key first, then the next one, then the
// previous ones still trusted, newest first. Entries that do not parse (a damaged record) are
// left out rather than passed on.
func (ks *KeySet) Authorities(now time.Time) []string {
	var out []string
	for _, k := range []string{ks.Current, ks.Next} {
		if s, err := parseCAKey(k); err == nil {
			out = append(out, authorizedLine(s.PublicKey()))
		}
	}
	for i := len(ks.Previous) - 1; i >= 0; i-- {
		p := ks.Previous[i]
		if !now.Before(p.TrustedUntil) {
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(p.PublicKey))
		if err != nil || checkKey(pub) != nil {
			continue
		}
		out = append(out, authorizedLine(pub))
	}
	return out
}

// Signer returns a signer for the current key. Parsing the key costs a few
// microseconds; callers keep the signer (or the Authority built on it)
// until the next rotation.
func (ks *KeySet) Signer() (ssh.Signer, error) {
	if ks.Current == "" {
		return nil, errors.New("sshca: the key set has no current CA key")
	}
	s, err := parseCAKey(ks.Current)
	if err != nil {
		return nil, fmt.Errorf("sshca: current CA key: %w", err)
	}
	return s, nil
}

// parseCAKey reads a CA private key of a type Stepup signs with.
func parseCAKey(pemKey string) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey([]byte(pemKey))
	if err != nil {
		return nil, err
	}
	switch s.PublicKey().Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return s, nil
	}
	return nil, fmt.Errorf("it has type %s; only Ed25519 and ECDSA CA keys are used", s.PublicKey().Type())
}

// newCAKey makes a key of an SSH type and returns it as an OpenSSH private
// key.
func newCAKey(typ string) (string, error) {
	var priv crypto.PrivateKey
	var err error
	switch typ {
	case ssh.KeyAlgoED25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case ssh.KeyAlgoECDSA256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ssh.KeyAlgoECDSA384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case ssh.KeyAlgoECDSA521:
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		return "", fmt.Errorf("sshca: cannot make a CA key of type %s", typ)
	}
	if err != nil {
		return "", fmt.Errorf("sshca: generating %s CA key: %w", typ, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, caKeyComment)
	if err != nil {
		return "", fmt.Errorf("sshca: encoding %s CA key: %w", typ, err)
	}
	return string(pem.EncodeToMemory(block)), nil
}

// authorizedLine is key in authorized_keys format without the newline.
func authorizedLine(key ssh.PublicKey) string {
	return strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(key)), "\n")
}

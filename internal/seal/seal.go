// Package seal encrypts secrets at rest (signing keys, TOTP secrets) under
// the operator's configured secret, so that a copy of the store alone does
// not reveal them.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

// MinSecretLen is the shortest secret New accepts. HKDF does not stretch a
// weak secret the way a password hash would, so the secret has to be a
// random string; the length check only catches obvious misconfiguration.
const MinSecretLen = 16

// version is the first byte of every sealed value. It names the key
// derivation and cipher, so that either can change later while values
// sealed today can still be told apart and opened.
const version byte = 1

// hkdfInfo separates this key from any other key that might one day be
// derived from the same operator secret.
const hkdfInfo = "stepup seal v1"

// ErrOpen is returned by Open for every failure. Callers cannot act on the
// difference between a wrong key, tampering or truncation, and telling them
// apart would only help an attacker probing stored values.
var ErrOpen = errors.New("seal: cannot open sealed value")

// Box seals and opens values with a key derived from the operator secret.
// It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New derives the sealing key from secret.
func New(secret string) (*Box, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("seal: secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, hkdfInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("seal: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	// Random nonces leave the nonce bookkeeping to the cipher package. The
	// 2^32-message limit per key is far beyond the number of secrets a
	// deployment seals.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext and binds it to additionalData, which must be
// presented again to Open. Use the value's storage key as additionalData so
// that a sealed value copied to another key does not open there.
//
// The result is the version byte, a random 12-byte nonce, then the
// ciphertext and tag. There is no error: crypto/rand does not fail on
// supported platforms.
func (b *Box) Seal(plaintext, additionalData []byte) []byte {
	out := make([]byte, 1, 1+len(plaintext)+b.aead.Overhead())
	out[0] = version
	return b.aead.Seal(out, nil, plaintext, additionalData)
}

// Open decrypts a value made by Seal with the same secret and
// additionalData. Any failure is ErrOpen.
func (b *Box) Open(sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < 1+b.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	plaintext, err := b.aead.Open(nil, nil, sealed[1:], additionalData)
	if err != nil {
		return nil, ErrOpen
	}
	return plaintext, nil
}

package mfa

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
)

// RecoveryCodeCount is how many recovery codes a person gets: enough to
// survive a lost phone several times, few enough to write down.
const RecoveryCodeCount = 10

// recoveryAlphabet is 0-9a-z without 0, 1, l and o, which people misread
// when copying codes from paper. It has exactly 32 symbols, so each
// character carries 5 bits and a random byte maps onto it without bias.
const recoveryAlphabet = "23456789abcdefghijkmnpqrstuvwxyz"

const (
	recoveryGroup   = 5
	recoveryCodeLen = 2 * recoveryGroup // 50 bits
)

// NewRecoveryCodes returns n distinct codes formatted "xxxxx-xxxxx", each
// carrying 50 random bits. Distinct, because a duplicate would be one code
// the person believes they have but can never use.
func NewRecoveryCodes(n int) ([]string, error) {
	if n < 0 {
		return nil, fmt.Errorf("mfa: %d recovery codes", n)
	}
	codes := make([]string, 0, n)
	seen := make(map[string]bool, n)
	for len(codes) < n {
		var b [recoveryCodeLen]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("mfa: recovery codes: %w", err)
		}
		for i := range b {
			b[i] = recoveryAlphabet[b[i]%byte(len(recoveryAlphabet))]
		}
		code := string(b[:recoveryGroup]) + "-" + string(b[recoveryGroup:])
		if seen[code] {
			continue
		}
		seen[code] = true
		codes = append(codes, code)
	}
	return codes, nil
}

// NormalizeRecoveryCode lowercases, strips whitespace and dashes, and returns
// ok=false (and "") unless the result is exactly one code's worth of alphabet
// characters. Look-alikes such as "0" or "l" are refused rather than guessed
// at: none is in the alphabet, so no mapping would be right.
func NormalizeRecoveryCode(s string) (string, bool) {
	var b [recoveryCodeLen]byte
	n := 0
	for _, r := range s {
		switch {
		case unicode.IsSpace(r) || r == '-':
			continue
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		}
		// Only ASCII is ever accepted, so Unicode case folding (the Kelvin
		// sign lowercases to "k") cannot let two inputs share a code.
		if r > unicode.MaxASCII || !strings.ContainsRune(recoveryAlphabet, r) || n == recoveryCodeLen {
			return "", false
		}
		b[n] = byte(r)
		n++
	}
	if n != recoveryCodeLen {
		return "", false
	}
	return string(b[:]), true
}

// LooksLikeRecoveryCode tells a recovery code from a TOTP code typed into the
// same field. Digits alone (spaces ignored) are a TOTP attempt, even of the
// wrong length, so a slip earns "enter the 6-digit code"; a letter or a dash
// makes it a recovery code attempt. Ten digits and nothing else is a recovery
// code too, since codes drawn only from 2-9 do occur.
func LooksLikeRecoveryCode(s string) bool {
	n, digits := 0, true
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			continue
		case r == '-':
			return true
		case r < '0' || r > '9':
			digits = false
		}
		n++
	}
	return !digits || n == recoveryCodeLen
}

// RecoveryHasher hashes recovery codes with a server-side key. HMAC-SHA256
// rather than a slow hash: the codes carry 50 bits of entropy and guesses are
// throttled, so stretching adds nothing, but the key means a stolen store
// alone is not enough to test guesses offline.
type RecoveryHasher struct {
	key []byte
}

// NewRecoveryHasher keeps a copy of key. It panics on an empty key, since a
// keyless HMAC would quietly give up the protection the hasher exists for.
func NewRecoveryHasher(key []byte) *RecoveryHasher {
	if len(key) == 0 {
		panic("mfa: NewRecoveryHasher needs a key")
	}
	return &RecoveryHasher{key: bytes.Clone(key)}
}

// Hash returns the hex HMAC of the normalized code, so "ABCDE FGHIJ" and
// "abcde-fghij" hash alike. Input that is not a recovery code is hashed as
// given, which can match nothing NewRecoveryCodes produced.
func (h *RecoveryHasher) Hash(code string) string {
	if c, ok := NormalizeRecoveryCode(code); ok {
		code = c
	}
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

// Match returns the index in hashes of the code's hash, or -1. Every entry is
// compared in constant time, so timing reveals neither which code matched
// nor how close a guess came.
func (h *RecoveryHasher) Match(hashes []string, code string) int {
	c, ok := NormalizeRecoveryCode(code)
	if !ok {
		return -1
	}
	want := []byte(h.Hash(c))
	found := -1
	for i, s := range hashes {
		if subtle.ConstantTimeCompare([]byte(s), want) == 1 && found < 0 {
			found = i
		}
	}
	return found
}

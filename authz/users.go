package authz

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// validSeedUsers checks the password hashes of the users the config
// seeds, so that a bad one fails at start.
func validSeedUsers(users []User) error {
	for _, u := range users {
		if _, err := decodeArgon2id(u.PasswordHash); err != nil {
			return fmt.Errorf("user %s: %w", u.ID, err)
		}
	}
	return nil
}

// Argon2id parameters: RFC 9106's second recommended option scaled to a
// login endpoint (64 MiB would let a burst of logins exhaust memory).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
)

var b64std = base64.RawStdEncoding

// HashPassword returns an argon2id hash string of password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64std.EncodeToString(salt), b64std.EncodeToString(key)), nil
}

type argonHash struct {
	memory    uint32
	time      uint32
	threads   uint8
	salt, key []byte
}

func decodeArgon2id(s string) (argonHash, error) {
	var h argonHash
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return h, errors.New("password hash is not an argon2id string")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return h, errors.New("unsupported argon2 version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memory, &h.time, &h.threads); err != nil {
		return h, errors.New("malformed argon2id parameters")
	}
	// Refuse parameters that would let a config typo make logins trivial
	// to brute-force or take the server down.
	if h.memory < 8*1024 || h.memory > 1<<20 || h.time < 1 || h.time > 16 || h.threads < 1 {
		return h, errors.New("argon2id parameters out of range")
	}
	var err error
	if h.salt, err = b64std.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return h, errors.New("malformed argon2id salt")
	}
	if h.key, err = b64std.DecodeString(parts[5]); err != nil || len(h.key) < 16 {
		return h, errors.New("malformed argon2id key")
	}
	return h, nil
}

// CheckPassword compares in constant time.
func CheckPassword(hash, password string) bool {
	h, err := decodeArgon2id(hash)
	if err != nil {
		return false
	}
	key := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

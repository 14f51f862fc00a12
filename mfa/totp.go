package mfa

import (
	"bytes"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"
	"unicode"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// TOTP parameters: RFC 6238 defaults that every authenticator app supports.
// Several apps silently ignore other values in the otpauth URL, so anything
// else would enroll people with codes that never verify.
const (
	Period = 30 * time.Second
	Digits = 6
)

var (
	// ErrMalformedCode means the input is not Digits digits once spaces are
	// removed. It is a typing slip rather than a guess, so callers may ask
	// again without counting a failure.
	ErrMalformedCode = errors.New("mfa: the code must be 6 digits")
	// ErrWrongCode means a well-formed code that matches no allowed step.
	ErrWrongCode = errors.New("mfa: wrong code")
	// ErrInvalidSecret means the stored secret is not base32 or too short.
	// It is the server's fault, never the person's.
	ErrInvalidSecret = errors.New("mfa: invalid TOTP secret")
)

const (
	secretBytes = 20 // RFC 4226 recommends 160 bits
	// RFC 4226 (R6) requires at least 128 bits. Without a floor, an empty
	// secret left by a bug would still "verify" codes anyone can compute.
	minSecretBytes = 16
	// Each step of skew is another code an attacker may hit, and a huge
	// skew would also make Verify loop for ages.
	maxSkew = 10
	// pquerna derives the counter through float64, exact below 2^53.
	maxUnix = 1 << 52
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Key is a new TOTP secret for enrollment.
type Key struct {
	Secret string // base32, no padding, 160 bits (20 random bytes), as apps expect
	URL    string // otpauth://totp/Issuer:account?algorithm=SHA1&digits=6&issuer=…&period=30&secret=…
}

// NewKey makes a fresh secret. issuer is e.g. "Stepup" (or the host name),
// account the username. Neither may contain a colon: the otpauth label is
// "issuer:account", and apps split it at the first colon, so "host:8080"
// would show up as issuer "host" and account "8080:alice".
func NewKey(issuer, account string) (Key, error) {
	if strings.Contains(issuer, ":") || strings.Contains(account, ":") {
		return Key{}, fmt.Errorf("mfa: issuer %q and account %q must not contain a colon", issuer, account)
	}
	k, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      uint(Period / time.Second),
		SecretSize:  secretBytes,
		Digits:      otp.DigitsSix,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return Key{}, fmt.Errorf("mfa: new TOTP key: %w", err)
	}
	return Key{Secret: k.Secret(), URL: k.URL()}, nil
}

// QRCodePNG renders the key's otpauth URL as a PNG QR code of size×size
// pixels. A size too small for the QR modules is an error rather than an
// unreadable image.
func (k Key) QRCodePNG(size int) ([]byte, error) {
	if size <= 0 {
		return nil, fmt.Errorf("mfa: QR code size %d", size)
	}
	key, err := otp.NewKeyFromURL(k.URL)
	if err != nil {
		return nil, fmt.Errorf("mfa: QR code: %w", err)
	}
	img, err := key.Image(size, size)
	if err != nil {
		return nil, fmt.Errorf("mfa: QR code: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("mfa: QR code: %w", err)
	}
	return buf.Bytes(), nil
}

// Verify checks code against secret at now, accepting skew steps either side
// (skew 1 = ±30 s, to absorb clock drift and typing time).
//
// It returns the time-step counter (unix/30) that matched so the caller can
// make each step single-use; without that, a code seen over a shoulder stays
// good for the whole window. Spaces in the code are ignored ("123 456").
// Input that is not Digits digits is ErrMalformedCode, a well-formed code that
// matches no step is ErrWrongCode; any other error is the server's.
func Verify(secret, code string, now time.Time, skew uint) (step int64, err error) {
	code, ok := parseCode(code)
	if !ok {
		return 0, ErrMalformedCode
	}
	if err := checkSecret(secret); err != nil {
		return 0, err
	}
	if skew > maxSkew {
		return 0, fmt.Errorf("mfa: skew %d is more than %d steps", skew, maxSkew)
	}
	unix := now.Unix()
	if unix < 0 || unix > maxUnix {
		return 0, fmt.Errorf("mfa: clock reads %v, outside the range TOTP can use", now)
	}

	period := int64(Period / time.Second)
	current := unix / period
	matched := int64(-1)
	// Every candidate is computed and compared, so the time taken does not
	// tell which step (if any) matched. Ascending order makes the newest
	// match win, which keeps the replay guard's window as far ahead as
	// possible.
	for s := current - int64(skew); s <= current+int64(skew); s++ {
		if s < 0 {
			continue
		}
		want, err := codeAt(secret, time.Unix(s*period, 0), otp.DigitsSix)
		if err != nil {
			return 0, err
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			matched = s
		}
	}
	if matched < 0 {
		return 0, ErrWrongCode
	}
	return matched, nil
}

// codeAt is the one place that calls the library, so the RFC 6238 vector test
// exercises exactly what Verify does.
func codeAt(secret string, t time.Time, digits otp.Digits) (string, error) {
	c, err := totp.GenerateCodeCustom(secret, t, totp.ValidateOpts{
		Period:    uint(Period / time.Second),
		Digits:    digits,
		Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidSecret, err)
	}
	return c, nil
}

// parseCode drops whitespace (apps display "123 456", and pasting may bring a
// no-break space along) and accepts exactly Digits ASCII digits.
func parseCode(s string) (string, bool) {
	var b [Digits]byte
	n := 0
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			continue
		case r < '0' || r > '9' || n == Digits:
			return "", false
		}
		b[n] = byte(r)
		n++
	}
	if n != Digits {
		return "", false
	}
	return string(b[:]), true
}

// checkSecret decodes the secret the way the library does (case-insensitive,
// padding optional) to enforce the minimum length before any code is made.
func checkSecret(secret string) error {
	s := strings.ToUpper(strings.TrimRight(strings.TrimSpace(secret), "="))
	raw, err := b32.DecodeString(s)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSecret, err)
	}
	if len(raw) < minSecretBytes {
		return fmt.Errorf("%w: %d bits, need at least %d", ErrInvalidSecret, 8*len(raw), 8*minSecretBytes)
	}
	return nil
}

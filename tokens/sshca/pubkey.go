package sshca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// MaxPublicKeyInput is the most ParsePublicKey reads. The largest key we
// accept (RSA 16384 bits) takes under 3 KiB as a line; the rest is room for
// a long comment.
const MaxPublicKeyInput = 16 << 10

// Bounds on RSA user keys. 3072 bits is NIST's floor for use past 2030;
// 16384 is the most ssh-keygen makes and the most OpenSSH accepts.
const (
	minRSABits = 3072
	maxRSABits = 16384
)

// KeyReason says why a public key was refused.
type KeyReason int

// The reasons a public key is refused.
const (
	// KeyMalformed: not one readable OpenSSH public key line.
	KeyMalformed KeyReason = iota + 1
	// KeyIsCertificate: a certificate was sent where its public key belongs.
	KeyIsCertificate
	// KeyTooWeak: a supported type, but too small (RSA under 3072 bits).
	KeyTooWeak
	// KeyUnsupported: a type we do not sign (DSA, ML-DSA, unknown types).
	KeyUnsupported
	// KeyTooLarge: the input is over MaxPublicKeyInput bytes.
	KeyTooLarge
)

func (r KeyReason) String() string {
	switch r {
	case KeyMalformed:
		return "malformed"
	case KeyIsCertificate:
		return "certificate"
	case KeyTooWeak:
		return "too weak"
	case KeyUnsupported:
		return "unsupported"
	case KeyTooLarge:
		return "too large"
	}
	return fmt.Sprintf("KeyReason(%d)", int(r))
}

// KeyError is why a public key was refused. Callers branch on Reason; the
// message (Detail plus what to do about it) is meant for the person who
// sent the key and never contains more than a short, quoted excerpt of it.
type KeyError struct {
	Reason KeyReason
	// Detail is the specific fact, one clause without a final period,
	// e.g. "RSA keys must have at least 3072 bits; this one has 2048".
	Detail string
}

func (e *KeyError) Error() string {
	var advice string
	switch e.Reason {
	case KeyMalformed:
		advice = "Send the contents of your public key file, one line such as the one in ~/.ssh/id_ed25519.pub"
	case KeyIsCertificate:
		advice = "Send the public key the certificate was issued for (for example ~/.ssh/id_ed25519.pub, not id_ed25519-cert.pub)"
	case KeyTooWeak:
		advice = "Generate one with: ssh-keygen -t ed25519"
	case KeyUnsupported:
		advice = "Generate an Ed25519 key with: ssh-keygen -t ed25519"
	case KeyTooLarge:
		advice = "Send exactly one public key line, such as the contents of ~/.ssh/id_ed25519.pub"
	default:
		advice = "Send an Ed25519 public key; make one with: ssh-keygen -t ed25519"
	}
	if e.Detail == "" {
		return "The public key was refused (" + e.Reason.String() + "). " + advice
	}
	return e.Detail + ". " + advice
}

func keyErr(r KeyReason, format string, args ...any) *KeyError {
	return &KeyError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ParsePublicKey parses one OpenSSH public key line ("type base64
// [comment]", as in an id_*.pub file) sent by a client, and refuses with a
// *KeyError what we will not sign:
//
//   - input over MaxPublicKeyInput bytes (KeyTooLarge);
//   - empty input, a private key, more than one key, authorized_keys
//     options, bad base64, a declared type that differs from the encoded
//     one, or an encoding that is not canonical (KeyMalformed);
//   - a certificate (KeyIsCertificate);
//   - RSA under 3072 bits (KeyTooWeak);
//   - DSA, RSA over 16384 bits, ML-DSA and unknown types (KeyUnsupported).
//
// Accepted: Ed25519, ECDSA on P-256, P-384 and P-521, RSA of 3072 to 16384
// bits, and the FIDO security-key types sk-ssh-ed25519@openssh.com and
// sk-ecdsa-sha2-nistp256@openssh.com. Blank lines, lines starting with '#',
// surrounding whitespace, CRLF line ends and the comment are ignored.
func ParsePublicKey(line string) (ssh.PublicKey, error) {
	if len(line) > MaxPublicKeyInput {
		return nil, keyErr(KeyTooLarge, "The input is %d bytes; at most %d are accepted", len(line), MaxPublicKeyInput)
	}
	if strings.Contains(line, "PRIVATE KEY-----") || strings.HasPrefix(strings.TrimSpace(line), "PuTTY-User-Key-File-") {
		return nil, keyErr(KeyMalformed, "This is a private key, which must never leave your machine")
	}
	if strings.Contains(line, "BEGIN SSH2 PUBLIC KEY") {
		return nil, keyErr(KeyMalformed, "This is an RFC 4716 (SSH2) public key; convert it with: ssh-keygen -i -f FILE")
	}

	var keyLine string
	lines := 0
	for l := range strings.SplitSeq(line, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		lines++
		if lines == 1 {
			keyLine = l
		}
	}
	switch {
	case lines == 0:
		return nil, keyErr(KeyMalformed, "No public key was given")
	case lines > 1:
		return nil, keyErr(KeyMalformed, "The input has %d lines; exactly one public key is accepted", lines)
	}

	fields := strings.Fields(keyLine)
	typ := fields[0]
	if isCertType(typ) {
		return nil, keyErr(KeyIsCertificate, "This is an SSH certificate (%s), not a public key", excerpt(typ))
	}
	if len(fields) < 2 {
		return nil, keyErr(KeyMalformed, "The line has no key after %s", excerpt(typ))
	}
	if strings.ContainsAny(typ, "=\",") || typ == "restrict" {
		return nil, keyErr(KeyMalformed, "The line starts with authorized_keys options (%s) instead of the key", excerpt(typ))
	}
	if len(fields) >= 4 && isKnownType(fields[2]) && looksBase64(fields[3]) {
		return nil, keyErr(KeyMalformed, "The line holds more than one key; exactly one public key is accepted")
	}

	blob, err := base64.StdEncoding.Strict().DecodeString(fields[1])
	encodedType, ok := wireType(blob)
	switch {
	case (err != nil || !ok) && !isKnownType(typ):
		return nil, keyErr(KeyMalformed, "The line does not start with an SSH key type such as ssh-ed25519 (it starts with %s)", excerpt(typ))
	case err != nil:
		return nil, keyErr(KeyMalformed, "The key after %s is not valid base64", excerpt(typ))
	case !ok:
		return nil, keyErr(KeyMalformed, "The key after %s is not an SSH public key encoding", excerpt(typ))
	}
	if encodedType != typ {
		return nil, keyErr(KeyMalformed, "The line says the key is %s but it encodes %s", excerpt(typ), excerpt(encodedType))
	}
	// Refuse by type before parsing, so that the person learns the type is
	// the problem rather than some detail of its encoding.
	if r, detail := typePolicy(typ); r != 0 {
		return nil, &KeyError{Reason: r, Detail: detail}
	}
	if typ == ssh.KeyAlgoRSA {
		// x/crypto refuses over-large moduli with a bare error; say so
		// ourselves.
		if bits, ok := rsaBits(blob); ok && bits > maxRSABits {
			return nil, keyErr(KeyUnsupported, "RSA keys over %d bits are not supported; this one has %d", maxRSABits, bits)
		}
	}

	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, keyErr(KeyMalformed, "The %s key could not be decoded (%s)", typ, strings.TrimPrefix(err.Error(), "ssh: "))
	}
	// Only the canonical encoding is accepted, so that the key we sign is
	// byte for byte the key that was sent.
	if !bytes.Equal(pub.Marshal(), blob) {
		return nil, keyErr(KeyMalformed, "The %s key is not canonically encoded", typ)
	}
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// checkKey applies the key policy to a parsed key: it is what Sign checks
// again, for keys that did not come through ParsePublicKey.
func checkKey(pub ssh.PublicKey) *KeyError {
	if pub == nil {
		return keyErr(KeyMalformed, "No public key was given")
	}
	typ := pub.Type()
	if _, ok := pub.(*ssh.Certificate); ok || isCertType(typ) {
		return keyErr(KeyIsCertificate, "This is an SSH certificate (%s), not a public key", typ)
	}
	if r, detail := typePolicy(typ); r != 0 {
		return &KeyError{Reason: r, Detail: detail}
	}
	switch typ {
	case ssh.KeyAlgoRSA:
		k, ok := cryptoKey(pub).(*rsa.PublicKey)
		if !ok {
			return keyErr(KeyMalformed, "The %s key could not be decoded", typ)
		}
		bits := k.N.BitLen()
		if bits < minRSABits {
			return keyErr(KeyTooWeak, "RSA keys must have at least %d bits; this one has %d", minRSABits, bits)
		}
		if bits > maxRSABits {
			return keyErr(KeyUnsupported, "RSA keys over %d bits are not supported; this one has %d", maxRSABits, bits)
		}
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256:
		k, ok := cryptoKey(pub).(*ecdsa.PublicKey)
		if !ok {
			return keyErr(KeyMalformed, "The %s key could not be decoded", typ)
		}
		if k.Curve != curveOf(typ) {
			return keyErr(KeyUnsupported, "ECDSA keys must use P-256, P-384 or P-521")
		}
	}
	return nil
}

// typePolicy decides by type name alone. It returns 0 for the types we
// sign (leaving size checks to the caller) and a reason otherwise.
func typePolicy(typ string) (KeyReason, string) {
	switch typ {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoRSA:
		return 0, ""
	case ssh.InsecureKeyAlgoDSA:
		return KeyUnsupported, "DSA keys (ssh-dss) are not supported: they are limited to 1024 bits and OpenSSH has dropped them"
	case ssh.KeyAlgoMLDSA44, ssh.KeyAlgoMLDSA65, ssh.KeyAlgoMLDSA87:
		return KeyUnsupported, fmt.Sprintf("%s keys are not supported: OpenSSH cannot use certificates for them", typ)
	}
	return KeyUnsupported, fmt.Sprintf("Keys of type %s are not supported", excerpt(typ))
}

// curveOf is the curve an ECDSA key type names.
func curveOf(typ string) elliptic.Curve {
	switch typ {
	case ssh.KeyAlgoECDSA384:
		return elliptic.P384()
	case ssh.KeyAlgoECDSA521:
		return elliptic.P521()
	}
	return elliptic.P256()
}

func cryptoKey(pub ssh.PublicKey) any {
	if c, ok := pub.(ssh.CryptoPublicKey); ok {
		return c.CryptoPublicKey()
	}
	return nil
}

// isCertType covers OpenSSH's certificate types and x/crypto's vendor ones
// (…-cert-v01@golang.org).
func isCertType(typ string) bool {
	return strings.Contains(typ, "-cert-v01@")
}

func isKnownType(typ string) bool {
	if isCertType(typ) {
		return true
	}
	switch typ {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256, ssh.KeyAlgoRSA, ssh.InsecureKeyAlgoDSA,
		ssh.KeyAlgoMLDSA44, ssh.KeyAlgoMLDSA65, ssh.KeyAlgoMLDSA87:
		return true
	}
	return false
}

// looksBase64 is true for a string that plausibly is an encoded key blob:
// every blob starts with a 4-byte length whose first bytes are zero, which
// base64 writes as "AAAA".
func looksBase64(s string) bool {
	return strings.HasPrefix(s, "AAAA")
}

// wireType reads the type string a key blob starts with.
func wireType(blob []byte) (string, bool) {
	var w struct {
		Type string
		Rest []byte `ssh:"rest"`
	}
	if err := ssh.Unmarshal(blob, &w); err != nil || w.Type == "" || !utf8.ValidString(w.Type) {
		return "", false
	}
	return w.Type, true
}

// rsaBits reads the modulus size of an ssh-rsa blob without the limits
// ssh.ParsePublicKey applies.
func rsaBits(blob []byte) (int, bool) {
	var w struct {
		Type string
		E, N *big.Int
		Rest []byte `ssh:"rest"`
	}
	if err := ssh.Unmarshal(blob, &w); err != nil {
		return 0, false
	}
	return w.N.BitLen(), true
}

// excerpt quotes at most a few dozen bytes of client input for a message.
func excerpt(s string) string {
	const max = 40
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// Package sshca is Stepup's SSH certificate authority: it signs OpenSSH
// user certificates for the holder of an access token, carrying the token's
// amr, auth_time, grant and scopes so that an SSH gateway can apply the
// same step-up policy as an HTTP resource server.
//
// It also holds the CA key material as one rotating record (KeySet) and
// the policy for the public keys clients send (ParsePublicKey). Resource
// servers import it, so it must not import authz.
package sshca

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Defaults for Config.
const (
	DefaultMaxTTL   = time.Hour
	DefaultBackdate = time.Minute
)

// maxNameLen bounds the user id and username. Both come from our own user
// records, but they end up in sshd logs and in every certificate.
const maxNameLen = 256

// The extensions every certificate carries besides the token extensions:
// what ssh-keygen grants by default, so that a certificate behaves like a
// plain key in authorized_keys.
var standardExtensions = []string{
	"permit-X11-forwarding",
	"permit-agent-forwarding",
	"permit-port-forwarding",
	"permit-pty",
	"permit-user-rc",
}

// Claims are what a certificate carries from the access token it was
// issued for. Its JSON form, with the keys in this order, is the
// token-claims extension's value.
type Claims struct {
	AMR      []string `json:"amr"`
	AuthTime int64    `json:"auth_time"`
	Grant    string   `json:"grant"`
	Scope    []string `json:"scp"`
}

// Request is one certificate to sign.
type Request struct {
	PublicKey   ssh.PublicKey // the user's key
	UserID      string        // KeyId
	Username    string        // the one principal
	TokenID     string        // the access token's jti → extension token-id@<domain>
	TokenExpiry time.Time     // the cert never outlives the token
	Claims      Claims        // → extension token-claims@<domain> as compact JSON
}

// Config of an Authority. Zero values take defaults.
type Config struct {
	// Domain is the extension suffix, e.g. "id.example.com". Required.
	Domain string
	// MaxTTL bounds a certificate's lifetime after now; at most one hour
	// (DESIGN.md). Default DefaultMaxTTL.
	MaxTTL time.Duration
	// Backdate moves ValidAfter into the past to absorb clock skew between
	// us and the gateways. Default DefaultBackdate.
	Backdate time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.Backdate == 0 {
		c.Backdate = DefaultBackdate
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a configuration New would refuse, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := validDomain(c.Domain); err != nil {
		return err
	}
	if c.MaxTTL < 0 || c.MaxTTL > DefaultMaxTTL {
		return fmt.Errorf("sshca: MaxTTL must be between 0 and %v, got %v", DefaultMaxTTL, c.MaxTTL)
	}
	if c.Backdate < 0 {
		return fmt.Errorf("sshca: Backdate must not be negative, got %v", c.Backdate)
	}
	return nil
}

func validDomain(d string) error {
	if d == "" {
		return errors.New("sshca: Domain is required (the suffix of the certificate extensions, e.g. the issuer's host name)")
	}
	for _, r := range d {
		if r == '@' || r == ',' || unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("sshca: Domain %q may not contain whitespace, control characters, '@' or ','", d)
		}
	}
	return nil
}

// ClaimsExtension is the name of the extension holding the token's claims.
func ClaimsExtension(domain string) string { return "token-claims@" + domain }

// TokenIDExtension is the name of the extension holding the token's jti.
func TokenIDExtension(domain string) string { return "token-id@" + domain }

// Authority signs user certificates. It is immutable and safe for
// concurrent use; build a new one when the CA key rotates.
type Authority struct {
	cfg    Config
	signer ssh.Signer
}

// New returns an Authority signing with signer, which must be the user CA
// key: Ed25519, ECDSA, or RSA of at least 3072 bits.
func New(cfg Config, signer ssh.Signer) (*Authority, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, errors.New("sshca: no user CA key configured")
	}
	if err := checkKey(signer.PublicKey()); err != nil {
		return nil, fmt.Errorf("sshca: unusable user CA key: %s", err.Detail)
	}
	return &Authority{cfg: cfg, signer: signer}, nil
}

// PublicKey is the CA key certificates are signed with.
func (a *Authority) PublicKey() ssh.PublicKey { return a.signer.PublicKey() }

// RequestReason says why Sign refused a request.
type RequestReason int

// The reasons Sign refuses a request. Problems with the public key itself
// come back as *KeyError instead.
const (
	// RequestTokenExpired: TokenExpiry is not after now (to the second).
	RequestTokenExpired RequestReason = iota + 1
	// RequestBadUserID: UserID is empty or not printable.
	RequestBadUserID
	// RequestBadUsername: Username is empty or holds characters OpenSSH
	// cannot carry in a principal (whitespace, ',' or control characters).
	RequestBadUsername
	// RequestNoTokenID: TokenID is empty or not printable.
	RequestNoTokenID
)

func (r RequestReason) String() string {
	switch r {
	case RequestTokenExpired:
		return "token expired"
	case RequestBadUserID:
		return "bad user id"
	case RequestBadUsername:
		return "bad username"
	case RequestNoTokenID:
		return "no token id"
	}
	return fmt.Sprintf("RequestReason(%d)", int(r))
}

// RequestError is why Sign refused a request.
type RequestError struct {
	Reason RequestReason
	Detail string
}

func (e *RequestError) Error() string {
	return "sshca: cannot sign certificate: " + e.Detail
}

// Sign validates the request, builds the certificate, and signs it. It
// returns *KeyError for an unacceptable public key, *RequestError for any
// other refusal, and a plain error only if the CA key fails to sign.
func (a *Authority) Sign(req Request) (*ssh.Certificate, error) {
	p, err := a.validate(req, a.cfg.Now())
	if err != nil {
		return nil, err
	}
	cert, err := p.certificate(a.cfg.Domain)
	if err != nil {
		return nil, err
	}
	if err := cert.SignCert(rand.Reader, a.signer); err != nil {
		return nil, fmt.Errorf("sshca: signing with the user CA key: %w", err)
	}
	return cert, nil
}

// plan is a request that passed validation, with its validity window.
type plan struct {
	req           Request
	after, before uint64
}

func (a *Authority) validate(req Request, now time.Time) (plan, error) {
	if err := checkKey(req.PublicKey); err != nil {
		return plan{}, err
	}
	if err := checkName(req.UserID); err != "" {
		return plan{}, &RequestError{RequestBadUserID, "user id " + err}
	}
	if err := checkName(req.Username); err != "" {
		return plan{}, &RequestError{RequestBadUsername, "username " + err}
	}
	if strings.ContainsRune(req.Username, ',') {
		return plan{}, &RequestError{RequestBadUsername, fmt.Sprintf("username %q contains ',', which separates principals", req.Username)}
	}
	if err := checkName(req.TokenID); err != "" {
		return plan{}, &RequestError{RequestNoTokenID, "token id " + err}
	}

	if !req.TokenExpiry.After(now) {
		return plan{}, &RequestError{RequestTokenExpired, fmt.Sprintf("the access token expired at %s", req.TokenExpiry.UTC().Format(time.RFC3339))}
	}
	end := now.Add(a.cfg.MaxTTL)
	if req.TokenExpiry.Before(end) {
		end = req.TokenExpiry
	}
	// Certificates count in whole seconds and a checker treats ValidBefore
	// as exclusive, so a token expiring within the current second would
	// yield a certificate that is never valid.
	before := end.Unix()
	if before <= now.Unix() {
		return plan{}, &RequestError{RequestTokenExpired, fmt.Sprintf("the access token expires at %s, within the second", req.TokenExpiry.UTC().Format(time.RFC3339Nano))}
	}
	after := max(now.Add(-a.cfg.Backdate).Unix(), 0)
	return plan{req: req, after: uint64(after), before: uint64(before)}, nil
}

// checkName returns why s cannot be a key id, principal or token id, or "".
func checkName(s string) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > maxNameLen:
		return fmt.Sprintf("is longer than %d bytes", maxNameLen)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Sprintf("%q contains whitespace or control characters", s)
		}
	}
	return ""
}

func (p plan) certificate(domain string) (*ssh.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	claims, err := marshalClaims(p.req.Claims)
	if err != nil {
		return nil, err
	}
	ext := make(map[string]string, len(standardExtensions)+2)
	for _, e := range standardExtensions {
		ext[e] = ""
	}
	ext[ClaimsExtension(domain)] = string(claims)
	ext[TokenIDExtension(domain)] = p.req.TokenID
	return &ssh.Certificate{
		Key:             p.req.PublicKey,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           p.req.UserID,
		ValidPrincipals: []string{p.req.Username},
		ValidAfter:      p.after,
		ValidBefore:     p.before,
		Permissions:     ssh.Permissions{Extensions: ext},
	}, nil
}

// randomSerial is a random non-zero serial: zero means "no serial" to
// OpenSSH's revocation lists.
func randomSerial() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("sshca: random serial: %w", err)
		}
		if s := binary.BigEndian.Uint64(b[:]); s != 0 {
			return s, nil
		}
	}
}

// marshalClaims is the compact JSON of c, with nil lists as [] and without
// HTML escaping (the value is read by people in ssh-keygen -L, not by
// browsers).
func marshalClaims(c Claims) ([]byte, error) {
	c = c.normalized()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("sshca: encoding claims: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (c Claims) normalized() Claims {
	if c.AMR == nil {
		c.AMR = []string{}
	}
	if c.Scope == nil {
		c.Scope = []string{}
	}
	return c
}

// ErrNoTokenExtensions is returned (wrapped) by ParseClaims for a
// certificate that lacks the token extensions of the domain: one this CA
// did not issue, or one issued under another domain.
var ErrNoTokenExtensions = errors.New("sshca: certificate has no token extensions")

// ParseClaims reads the claims and the token id back from a certificate.
// It does not check the signature or validity; that is the CertChecker's
// job. The returned lists are never nil.
func ParseClaims(cert *ssh.Certificate, domain string) (Claims, string, error) {
	if cert == nil {
		return Claims{}, "", errors.New("sshca: no certificate")
	}
	if err := validDomain(domain); err != nil {
		return Claims{}, "", err
	}
	raw, ok := cert.Extensions[ClaimsExtension(domain)]
	if !ok {
		return Claims{}, "", fmt.Errorf("%w: missing %s", ErrNoTokenExtensions, ClaimsExtension(domain))
	}
	id, ok := cert.Extensions[TokenIDExtension(domain)]
	if !ok || id == "" {
		return Claims{}, "", fmt.Errorf("%w: missing %s", ErrNoTokenExtensions, TokenIDExtension(domain))
	}
	var c Claims
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Claims{}, "", fmt.Errorf("sshca: extension %s is not valid claims JSON: %w", ClaimsExtension(domain), err)
	}
	return c.normalized(), id, nil
}

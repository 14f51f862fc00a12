package tokens

import (
	"slices"
	"strings"
)

// AccessClaims are the claims of a Stepup access token (RFC 9068, header
// typ "at+jwt"). Resource servers read amr and auth_time to decide whether
// the person's authentication is enough.
type AccessClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
	ID       string   `json:"jti"`
	ClientID string   `json:"client_id"`
	Scope    []string `json:"scp"`
	AMR      []string `json:"amr,omitempty"`
	AuthTime int64    `json:"auth_time,omitempty"`
	// Grant is how the grant began: authorization_code, client_credentials
	// or api_token. A refreshed token keeps the grant of its login.
	Grant string `json:"grant"`
}

// Authentication method reference values (RFC 8176 names where one exists).
const (
	MethodPassword = "pwd"
	MethodOTP      = "otp"
	MethodMFA      = "mfa"
	// MethodHardwareKey and MethodSoftwareKey are a passkey or security
	// key (WebAuthn): hwk, except swk for a platform authenticator that
	// gave no attestation of its hardware.
	MethodHardwareKey = "hwk"
	MethodSoftwareKey = "swk"
	// MethodUser is user verification (a PIN or biometric) on the key.
	MethodUser = "user"
	// MethodPhishingResistant is derived, as mfa is: multi-factor
	// authentication in which a key took part, whose assertion is bound to
	// this site and cannot be relayed by a look-alike. Not an RFC 8176
	// value; the name follows the OpenID EAP "phr".
	MethodPhishingResistant = "phr"
	// SSOPrefix starts the method of a login through an upstream provider:
	// "sso:acme".
	SSOPrefix = "sso:"
)

// IsKey reports whether a method is a passkey or security key.
func IsKey(m string) bool { return m == MethodHardwareKey || m == MethodSoftwareKey }

// SSOMethod is the amr value of a login through provider id.
func SSOMethod(id string) string { return SSOPrefix + id }

// AMR turns the factors a person completed into the amr claim: each method
// once, in a stable order; "mfa" when something the person has (otp, a
// key) came on top of a primary login (password or SSO), or a key verified
// the person itself (user); and "phr" when such MFA included a key.
// upstreamMFA is an SSO provider's own mfa, counted only where that
// provider is trusted for it.
func AMR(factors []string, upstreamMFA bool) []string {
	var out []string
	primary, second, key, user := false, false, false, false
	for _, f := range factors {
		switch {
		case f == MethodPassword || strings.HasPrefix(f, SSOPrefix):
			primary = true
		case f == MethodOTP:
			second = true
		case IsKey(f):
			second, key = true, true
		case f == MethodUser:
			user = true
		case f == MethodMFA, f == MethodPhishingResistant:
			continue // derived, never taken on trust from the input
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	mfa := (primary && second) || (key && user) || upstreamMFA
	if mfa {
		out = append(out, MethodMFA)
	}
	if mfa && key {
		out = append(out, MethodPhishingResistant)
	}
	return out
}

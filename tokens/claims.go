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
	// SSOPrefix starts the method of a login through an upstream provider:
	// "sso:acme".
	SSOPrefix = "sso:"
)

// SSOMethod is the amr value of a login through provider id.
func SSOMethod(id string) string { return SSOPrefix + id }

// AMR turns the factors a person completed into the amr claim: each method
// once, in a stable order, and "mfa" when a second factor (otp) came on top
// of a primary login (password or SSO). upstreamMFA is an SSO provider's own
// mfa, counted only where that provider is trusted for it.
func AMR(factors []string, upstreamMFA bool) []string {
	var out []string
	primary, second := false, false
	for _, f := range factors {
		switch {
		case f == MethodPassword || strings.HasPrefix(f, SSOPrefix):
			primary = true
		case f == MethodOTP:
			second = true
		case f == MethodMFA:
			continue // derived, never taken on trust from the input
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	if (primary && second) || upstreamMFA {
		out = append(out, MethodMFA)
	}
	return out
}

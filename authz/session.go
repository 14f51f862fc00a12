package authz

import (
	"maps"
	"slices"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/token/jwt"
)

// Session is what fosite carries from the authorization to every token of
// the grant. How the person authenticated (amr, auth_time, acr) lives in the
// ID token claims, and access tokens copy it from there, so the two can never
// disagree and a refresh keeps what the login established.
type Session struct {
	Subject   string                         `json:"sub"`
	Username  string                         `json:"username,omitempty"`
	Grant     string                         `json:"grant"`
	ExpiresAt map[fosite.TokenType]time.Time `json:"exp,omitempty"`
	Claims    *jwt.IDTokenClaims             `json:"claims"`
	Headers   *jwt.Headers                   `json:"headers,omitempty"`
	// SSO is when the login went through each upstream provider; a refresh
	// past the provider's maximum session age fails.
	SSO map[string]time.Time `json:"sso,omitempty"`
	// OTPAt is when the login proved its otp factor, if it did; the
	// factors epoch is judged against it (see secondFactors.otpStillValid).
	OTPAt time.Time `json:"otp_at,omitzero"`
	// KeyAt is when the login proved a passkey, if it did; the passkey
	// epoch is judged against it (see passkeys.keyStillValid).
	KeyAt time.Time `json:"key_at,omitzero"`
}

// otpAt is when the grant's otp was proved: OTPAt, or for grants made
// before it was kept, the login's auth_time, which is no earlier.
func (s *Session) otpAt() time.Time {
	if !s.OTPAt.IsZero() {
		return s.OTPAt
	}
	return s.AuthTime()
}

// keyAt is when the grant's key was proved: KeyAt, or for grants made
// before it was kept, the login's auth_time, which is no earlier.
func (s *Session) keyAt() time.Time {
	if !s.KeyAt.IsZero() {
		return s.KeyAt
	}
	return s.AuthTime()
}

var _ openid.Session = (*Session)(nil)

func newSession() *Session {
	return &Session{Claims: &jwt.IDTokenClaims{}, Headers: &jwt.Headers{}}
}

func (s *Session) AMR() []string       { return s.IDTokenClaims().AuthenticationMethodsReferences }
func (s *Session) AuthTime() time.Time { return s.IDTokenClaims().AuthTime }
func (s *Session) GetSubject() string  { return s.Subject }
func (s *Session) GetUsername() string { return s.Username }

func (s *Session) SetExpiresAt(key fosite.TokenType, exp time.Time) {
	if s.ExpiresAt == nil {
		s.ExpiresAt = map[fosite.TokenType]time.Time{}
	}
	s.ExpiresAt[key] = exp
}

func (s *Session) GetExpiresAt(key fosite.TokenType) time.Time {
	return s.ExpiresAt[key]
}

func (s *Session) IDTokenClaims() *jwt.IDTokenClaims {
	if s.Claims == nil {
		s.Claims = &jwt.IDTokenClaims{}
	}
	return s.Claims
}

func (s *Session) IDTokenHeaders() *jwt.Headers {
	if s.Headers == nil {
		s.Headers = &jwt.Headers{}
	}
	return s.Headers
}

// Clone is a deep copy: fosite clones a session before changing it for a new
// token, and the original must stay as it was stored.
func (s *Session) Clone() fosite.Session {
	if s == nil {
		return nil
	}
	c := *s
	c.ExpiresAt = maps.Clone(s.ExpiresAt)
	c.SSO = maps.Clone(s.SSO)
	if s.Claims != nil {
		claims := *s.Claims
		claims.Audience = slices.Clone(s.Claims.Audience)
		claims.AuthenticationMethodsReferences = slices.Clone(s.Claims.AuthenticationMethodsReferences)
		claims.Extra = maps.Clone(s.Claims.Extra)
		c.Claims = &claims
	}
	if s.Headers != nil {
		c.Headers = &jwt.Headers{Extra: maps.Clone(s.Headers.Extra)}
	}
	return &c
}

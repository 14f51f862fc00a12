package tokens

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Requirements are what an organization demands of how a person
// authenticated: methods that must all be in amr ("mfa", "sso:acme"), and
// optionally how recent the authentication must be.
type Requirements struct {
	AMR []string `json:"amr"`
	// MaxAge, in seconds since auth_time; nil demands no freshness.
	MaxAge *int64 `json:"max_age"`
	// of is the requirement a Missing result was measured against: a
	// challenge states it whole (RFC 9470), so that a client starting a
	// fresh login asks for everything in one trip, while its words name
	// only what is missing.
	of *Requirements
}

// Satisfied reports whether nothing is required.
func (r Requirements) Satisfied() bool { return len(r.AMR) == 0 && r.MaxAge == nil }

// Missing is the one policy function: what a token with this amr and
// auth_time lacks for r at now. The result is itself a Requirements, which
// is what a step-up must collect; Satisfied() when the token is enough.
func Missing(r Requirements, amr []string, authTime, now time.Time) Requirements {
	required := Requirements{MaxAge: r.MaxAge}
	out := Requirements{of: &required}
	for _, m := range r.AMR {
		if slices.Contains(required.AMR, m) {
			continue
		}
		required.AMR = append(required.AMR, m)
		if !slices.Contains(amr, m) {
			out.AMR = append(out.AMR, m)
		}
	}
	if r.MaxAge != nil && (authTime.IsZero() || now.Sub(authTime) > time.Duration(*r.MaxAge)*time.Second) {
		out.MaxAge = r.MaxAge
	}
	if out.Satisfied() {
		return Requirements{}
	}
	return out
}

// Required is the whole requirement a Missing result was measured
// against; for any other Requirements, itself.
func (m Requirements) Required() Requirements {
	if m.of != nil {
		return *m.of
	}
	return m
}

// ErrorInsufficientAuthentication is RFC 9470's error code.
const ErrorInsufficientAuthentication = "insufficient_user_authentication"

const challengeDescription = "Additional authentication is required"

// WWWAuthenticate is the header value of a step-up challenge for missing
// m: the amr and max_age the resource requires.
func (m Requirements) WWWAuthenticate() string {
	r := m.Required()
	v := `Bearer error="` + ErrorInsufficientAuthentication + `", error_description="` + challengeDescription + `"`
	if len(r.AMR) > 0 {
		v += `, amr="` + strings.Join(r.AMR, " ") + `"`
	}
	if r.MaxAge != nil {
		v += `, max_age="` + strconv.FormatInt(*r.MaxAge, 10) + `"`
	}
	return v
}

// ChallengeBody is the JSON body that goes with the header.
type ChallengeBody struct {
	Error       string   `json:"error"`
	Description string   `json:"error_description"`
	AMR         []string `json:"amr"`
	MaxAge      *int64   `json:"max_age,omitempty"`
}

// Body is the JSON body of a step-up challenge for missing m: what the
// resource requires, and in words what is missing.
func (m Requirements) Body() ChallengeBody {
	r := m.Required()
	amr := r.AMR
	if amr == nil {
		amr = []string{}
	}
	return ChallengeBody{Error: ErrorInsufficientAuthentication, Description: challengeDescription + ": " + m.Describe(", "), AMR: amr, MaxAge: r.MaxAge}
}

// Describe names each missing thing for a person, joined by sep.
func (m Requirements) Describe(sep string) string {
	var parts []string
	for _, a := range m.AMR {
		parts = append(parts, describeMethod(a))
	}
	if m.MaxAge != nil {
		parts = append(parts, "A login within the last "+HumanDuration(time.Duration(*m.MaxAge)*time.Second))
	}
	return strings.Join(parts, sep)
}

func describeMethod(m string) string {
	switch {
	case m == MethodMFA:
		return "Multi-factor authentication (MFA)"
	case m == MethodPhishingResistant:
		return "Phishing-resistant multi-factor authentication (passkey)"
	case m == MethodOTP:
		return "A code from an authenticator app (OTP)"
	case m == MethodPassword:
		return "Your password"
	case strings.HasPrefix(m, SSOPrefix):
		return fmt.Sprintf("Single sign-on (SSO), provider: %q", strings.TrimPrefix(m, SSOPrefix))
	}
	return fmt.Sprintf("Authentication method %q", m)
}

// SSHDenied is the text an SSH gateway writes to the person's terminal when
// the certificate's authentication is not enough for the service. The
// Parameters line, one line of JSON that the CLI reads to step up, states
// what the service requires; the Detail lines, what is missing.
func (m Requirements) SSHDenied(service, username, userID string) string {
	params, _ := json.Marshal(struct {
		AMR    []string `json:"amr"`
		MaxAge *int64   `json:"max_age,omitempty"`
	}{m.Body().AMR, m.Required().MaxAge})
	var b strings.Builder
	fmt.Fprintf(&b, "Error: Access denied\nService: %s\nUser: %s (%s)\nParameters: %s\nDetail: %s:\n", service, username, userID, params, challengeDescription)
	b.WriteString("\t - " + m.Describe("\n\t - ") + "\n")
	return b.String()
}

// SSHNoAccess is the text for a person who is not a member of the
// service's organization; it does not tell whether the service exists.
func SSHNoAccess(service, username, userID string) string {
	return fmt.Sprintf("Error: The service doesn't exist or you do not have access to it.\nService: %s\nUser: %s (%s)\n", service, username, userID)
}

// SSHRevokedError is the first line of SSHRevoked's text, by which the CLI
// knows to ask for a new certificate.
const SSHRevokedError = "Error: This SSH certificate has been revoked."

// SSHRevoked is the text for a certificate on the server's revocation list.
// The CLI gets a new one by itself where the login's tokens are still good
// (after signing out of a browser, say), and logs in again where not.
func SSHRevoked(service, username, userID string) string {
	return fmt.Sprintf("%s\nService: %s\nUser: %s (%s)\nDetail: Log in again for a new certificate: stepup login\n", SSHRevokedError, service, username, userID)
}

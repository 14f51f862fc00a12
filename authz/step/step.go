// Package step decides what a person must do next to sign in: the one
// answer every page, the authorization endpoint and the metrics share. It
// writes no HTTP and reads no store; callers pass what they know.
package step

import (
	"slices"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/tokens"
)

// Kind is a step.
type Kind int

const (
	// Done: the session is enough.
	Done Kind = iota
	// Password: sign in with the password (or an SSO provider).
	Password
	// Code: a code from the person's authenticator app.
	Code
	// Enroll: set up an authenticator app or a passkey first; doing so
	// counts as the factor.
	Enroll
	// SSO: a trip to the provider named in Step.Provider.
	SSO
	// Passkey: a passkey or security key.
	Passkey
)

func (k Kind) String() string {
	switch k {
	case Done:
		return "done"
	case Password:
		return "password"
	case Code:
		return "code"
	case Enroll:
		return "enroll"
	case SSO:
		return "sso"
	case Passkey:
		return "passkey"
	}
	return "unknown"
}

// Step is what comes next.
type Step struct {
	Kind Kind
	// Provider is the SSO provider's id, for Kind SSO.
	Provider string
}

// Request is what is asked of the session.
type Request struct {
	// AMR is every method demanded: the request's amr and the policies of
	// the organizations it names.
	AMR []string
	// MaxAge, when set, is how long ago a factor may have been completed.
	MaxAge *time.Duration
	// Login (prompt=login) wants factors completed after At.
	Login bool
	// At is when the request was made.
	At time.Time
}

// Session is what the browser's session has proved: when each method was
// last completed. A nil or empty map is nobody signed in. "user" is when a
// key last verified the person. "mfa" is there only when a trusted
// provider did multi-factor authentication itself (at the time of that
// SSO login).
type Session map[string]time.Time

// Enrollment is the second factors the person has set up.
type Enrollment struct {
	TOTP     bool
	Passkeys bool
}

// Next is the one step function. The person signs in first (password, a
// provider, or a passkey that verified them); then each demanded provider
// they have not been through; then a second factor if they have one
// (every login uses every factor the person has) or the request demands
// one: a key where it must resist phishing, the code where a code is
// named, else the code or a passkey, whichever they have, setting one up
// first when they have none.
func Next(r Request, s Session, e Enrollment) Step {
	if !r.Fresh(primaryAt(s)) {
		return Step{Kind: Password}
	}
	for _, m := range r.AMR {
		if id, ok := strings.CutPrefix(m, tokens.SSOPrefix); ok && !r.Fresh(s[m]) {
			return Step{Kind: SSO, Provider: id}
		}
	}
	key := r.Fresh(keyAt(s))
	code := r.Fresh(s[tokens.MethodOTP])
	verified := key && r.Fresh(s[tokens.MethodUser])
	demands := func(m string) bool { return slices.Contains(r.AMR, m) }
	switch {
	case demands(tokens.MethodPhishingResistant) && !key:
		return enrollOr(e.Passkeys, Passkey)
	case demands(tokens.MethodOTP) && !code:
		return enrollOr(e.TOTP, Code)
	}
	wantsSecond := e.TOTP || e.Passkeys || demands(tokens.MethodMFA) && !r.Fresh(s[tokens.MethodMFA]) && !verified
	switch {
	case !wantsSecond || code || key:
		return Step{Kind: Done}
	case e.TOTP:
		return Step{Kind: Code} // its page offers a passkey too, if there is one
	case e.Passkeys:
		return Step{Kind: Passkey}
	}
	return Step{Kind: Enroll}
}

// enrollOr is kind when the person has that factor, else setting it up.
func enrollOr(has bool, kind Kind) Step {
	if has {
		return Step{Kind: kind}
	}
	return Step{Kind: Enroll}
}

// keyAt is when a passkey or security key was last used.
func keyAt(s Session) time.Time {
	return latest(s[tokens.MethodHardwareKey], s[tokens.MethodSoftwareKey])
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Fresh says whether a factor completed at `at` still counts.
func (r Request) Fresh(at time.Time) bool {
	switch {
	case at.IsZero():
		return false
	case r.Login && at.Before(r.At):
		return false
	case r.MaxAge != nil && at.Add(*r.MaxAge).Before(r.At):
		return false
	}
	return true
}

// primaryAt is when the person last proved who they are with a first
// factor: a password, a provider, or a key that verified them.
func primaryAt(s Session) time.Time {
	var t time.Time
	for m, at := range s {
		if m == tokens.MethodPassword || strings.HasPrefix(m, tokens.SSOPrefix) {
			t = latest(t, at)
		}
	}
	if !s[tokens.MethodUser].IsZero() {
		t = latest(t, keyAt(s))
	}
	return t
}

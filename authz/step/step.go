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
	// Enroll: set up an authenticator first, then it counts as the code.
	Enroll
	// SSO: a trip to the provider named in Step.Provider.
	SSO
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
// last completed. A nil or empty map is nobody signed in. "mfa" is there
// only when a trusted provider did multi-factor authentication itself
// (at the time of that SSO login).
type Session map[string]time.Time

// Enrollment is the second factors the person has set up.
type Enrollment struct {
	TOTP bool
}

// Next is the one step function. The person signs in first (password or a
// provider); then each demanded provider they have not been through; then
// a second factor if they have one (every login uses every factor the
// person has) or the request demands one, setting up an authenticator
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
	upstreamMFA := r.Fresh(s[tokens.MethodMFA])
	wantsCode := e.TOTP || slices.Contains(r.AMR, tokens.MethodOTP) || slices.Contains(r.AMR, tokens.MethodMFA) && !upstreamMFA
	switch {
	case !wantsCode || r.Fresh(s[tokens.MethodOTP]):
		return Step{Kind: Done}
	case !e.TOTP:
		return Step{Kind: Enroll}
	}
	return Step{Kind: Code}
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
// factor (password or SSO).
func primaryAt(s Session) time.Time {
	var t time.Time
	for m, at := range s {
		if (m == tokens.MethodPassword || strings.HasPrefix(m, tokens.SSOPrefix)) && at.After(t) {
			t = at
		}
	}
	return t
}

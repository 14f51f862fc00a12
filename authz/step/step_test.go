package step_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/tokens"
)

var now = time.Unix(1_800_000_000, 0)

func ago(d time.Duration) time.Time { return now.Add(-d) }

func minutes(n int) *time.Duration { d := time.Duration(n) * time.Minute; return &d }

// sessions, enrollments and requests: every combination is tried below.
var (
	sessions = map[string]step.Session{
		"nobody":           nil,
		"pwd":              {"pwd": ago(time.Minute)},
		"pwd-old":          {"pwd": ago(2 * time.Hour)},
		"pwd+otp":          {"pwd": ago(time.Minute), "otp": ago(time.Minute)},
		"pwd+otp-old":      {"pwd": ago(time.Minute), "otp": ago(2 * time.Hour)},
		"sso:acme":         {"sso:acme": ago(time.Minute)},
		"pwd+sso:acme":     {"pwd": ago(time.Minute), "sso:acme": ago(time.Minute)},
		"pwd+otp+sso:acme": {"pwd": ago(time.Minute), "otp": ago(time.Minute), "sso:acme": ago(time.Minute)},
		"sso:other":        {"sso:other": ago(time.Minute)},
		// A trusted provider that did MFA itself.
		"sso:acme+mfa": {"sso:acme": ago(time.Minute), "mfa": ago(time.Minute)},
		"pwd+hwk":      {"pwd": ago(time.Minute), "hwk": ago(time.Minute)},
		"swk+user":     {"swk": ago(time.Minute), "user": ago(time.Minute)},
		"hwk":          {"hwk": ago(time.Minute)},
	}
	enrollments = map[string]step.Enrollment{"none": {}, "totp": {TOTP: true}, "passkey": {Passkeys: true},
		"both": {TOTP: true, Passkeys: true}}
	requests = map[string]step.Request{
		"nothing":          {At: now},
		"mfa":              {AMR: []string{"mfa"}, At: now},
		"otp":              {AMR: []string{"otp"}, At: now},
		"sso:acme":         {AMR: []string{"sso:acme"}, At: now},
		"mfa+sso:acme":     {AMR: []string{"mfa", "sso:acme"}, At: now},
		"max-age-1h":       {MaxAge: minutes(60), At: now},
		"mfa+max-age-1h":   {AMR: []string{"mfa"}, MaxAge: minutes(60), At: now},
		"prompt=login":     {Login: true, At: ago(30 * time.Second)},
		"prompt=login+mfa": {AMR: []string{"mfa"}, Login: true, At: ago(30 * time.Second)},
		"phr":              {AMR: []string{"phr"}, At: now},
		"mfa+phr+sso:acme": {AMR: []string{"mfa", "phr", "sso:acme"}, At: now},
	}
)

// TestNext pins the answers people meet most.
func TestNext(t *testing.T) {
	for _, tc := range []struct {
		session, enrollment, request string
		want                         step.Step
	}{
		{"nobody", "none", "nothing", step.Step{Kind: step.Password}},
		{"nobody", "totp", "mfa", step.Step{Kind: step.Password}},
		{"pwd", "none", "nothing", step.Step{Kind: step.Done}},
		{"pwd", "totp", "nothing", step.Step{Kind: step.Code}}, // every factor the person has
		{"pwd", "none", "mfa", step.Step{Kind: step.Enroll}},
		{"pwd", "totp", "mfa", step.Step{Kind: step.Code}},
		{"pwd+otp", "totp", "mfa", step.Step{Kind: step.Done}},
		{"pwd+otp", "totp", "sso:acme", step.Step{Kind: step.SSO, Provider: "acme"}},
		// Stepping up to the provider keeps the code: nothing but SSO is asked.
		{"pwd+otp", "totp", "mfa+sso:acme", step.Step{Kind: step.SSO, Provider: "acme"}},
		{"pwd+otp+sso:acme", "totp", "mfa+sso:acme", step.Step{Kind: step.Done}},
		{"sso:acme", "none", "nothing", step.Step{Kind: step.Done}},
		{"sso:acme", "totp", "mfa+sso:acme", step.Step{Kind: step.Code}},
		{"sso:other", "none", "sso:acme", step.Step{Kind: step.SSO, Provider: "acme"}},
		{"pwd-old", "none", "max-age-1h", step.Step{Kind: step.Password}},
		{"pwd", "none", "max-age-1h", step.Step{Kind: step.Done}},
		{"pwd+otp-old", "totp", "mfa+max-age-1h", step.Step{Kind: step.Code}},
		{"pwd+otp-old", "totp", "mfa", step.Step{Kind: step.Done}},
		{"pwd+otp", "totp", "prompt=login", step.Step{Kind: step.Password}},
		{"sso:acme+mfa", "none", "mfa+sso:acme", step.Step{Kind: step.Done}},
		{"sso:acme+mfa", "totp", "mfa", step.Step{Kind: step.Code}}, // every factor the person has
		{"sso:acme+mfa", "none", "otp", step.Step{Kind: step.Enroll}},
		// Passkeys: a second factor, a first one when they verify the person,
		// and the one way to phishing-resistant MFA.
		{"pwd", "passkey", "nothing", step.Step{Kind: step.Passkey}},
		{"pwd", "both", "mfa", step.Step{Kind: step.Code}},
		{"pwd+hwk", "passkey", "mfa", step.Step{Kind: step.Done}},
		{"swk+user", "passkey", "mfa", step.Step{Kind: step.Done}},
		{"swk+user", "both", "nothing", step.Step{Kind: step.Done}},
		{"hwk", "passkey", "nothing", step.Step{Kind: step.Password}}, // a key that did not verify the person is no login
		{"pwd+otp", "both", "phr", step.Step{Kind: step.Passkey}},
		{"pwd+otp", "totp", "phr", step.Step{Kind: step.Enroll}},
		{"pwd+hwk", "passkey", "otp", step.Step{Kind: step.Enroll}},
	} {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.session, tc.enrollment, tc.request), func(t *testing.T) {
			if got := step.Next(requests[tc.request], sessions[tc.session], enrollments[tc.enrollment]); got != tc.want {
				t.Errorf("Next = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestNextNeverAsksTwice plays every combination of session, enrollment
// and request to the end, doing each step as a person would: it ends in a
// few steps, never asks for the same thing twice, never asks for what the
// session already has, and what it ends with meets the request by the one
// policy function, tokens.Missing.
func TestNextNeverAsksTwice(t *testing.T) {
	for sn, s0 := range sessions {
		for en, e0 := range enrollments {
			for rn, r := range requests {
				t.Run(sn+"/"+en+"/"+rn, func(t *testing.T) {
					s, e := maps.Clone(s0), e0
					if s == nil {
						s = step.Session{}
					}
					var asked []step.Step
					for {
						st := step.Next(r, s, e)
						if st.Kind == step.Done {
							break
						}
						if slices.Contains(asked, st) {
							t.Fatalf("asked twice for %+v after %v", st, asked)
						}
						if len(asked) == 4 {
							t.Fatalf("no end after %v", asked)
						}
						asked = append(asked, st)
						switch at := r.At.Add(time.Second); st.Kind {
						case step.Password:
							s[tokens.MethodPassword] = at
						case step.Enroll:
							// What the page offers: a passkey where one is needed.
							if slices.Contains(r.AMR, tokens.MethodPhishingResistant) && s[tokens.MethodHardwareKey].IsZero() && s[tokens.MethodSoftwareKey].IsZero() {
								e.Passkeys = true
								s[tokens.MethodSoftwareKey], s[tokens.MethodUser] = at, at
							} else {
								e.TOTP = true
								s[tokens.MethodOTP] = at
							}
						case step.Passkey:
							if !e.Passkeys {
								t.Fatal("asked for a passkey of a person without one")
							}
							s[tokens.MethodHardwareKey] = at
						case step.Code:
							if !e.TOTP {
								t.Fatal("asked for a code of a person without an authenticator")
							}
							s[tokens.MethodOTP] = at
						case step.SSO:
							s[tokens.SSOMethod(st.Provider)] = at
						}
					}
					var methods []string
					for m := range s {
						methods = append(methods, m)
					}
					upstreamMFA := r.Fresh(s[tokens.MethodMFA])
					req := tokens.Requirements{AMR: r.AMR}
					if missing := tokens.Missing(req, tokens.AMR(methods, upstreamMFA), r.At, r.At); !missing.Satisfied() {
						t.Errorf("done after %v, but %v is missing", asked, missing.AMR)
					}
					possession := r.Fresh(s[tokens.MethodOTP]) || r.Fresh(s[tokens.MethodHardwareKey]) || r.Fresh(s[tokens.MethodSoftwareKey])
					if (e.TOTP || e.Passkeys) && !possession {
						t.Errorf("done after %v without the second factor of a person who has one", asked)
					}
				})
			}
		}
	}
}

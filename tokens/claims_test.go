package tokens

import (
	"slices"
	"testing"
)

func TestAMR(t *testing.T) {
	for _, tc := range []struct {
		name     string
		factors  []string
		upstream bool
		want     []string
	}{
		{"ok/password", []string{"pwd"}, false, []string{"pwd"}},
		{"ok/password+otp", []string{"pwd", "otp"}, false, []string{"otp", "pwd", "mfa"}},
		{"ok/sso+otp", []string{"sso:acme", "otp"}, false, []string{"otp", "sso:acme", "mfa"}},
		{"ok/sso-trusted-upstream-mfa", []string{"sso:acme"}, true, []string{"sso:acme", "mfa"}},
		{"ok/repeats-collapse", []string{"pwd", "pwd", "otp", "otp"}, false, []string{"otp", "pwd", "mfa"}},
		{"fail/otp-alone-is-not-mfa", []string{"otp"}, false, []string{"otp"}},
		{"fail/claimed-mfa-is-ignored", []string{"pwd", "mfa"}, false, []string{"pwd"}},
		{"fail/two-primaries-are-not-mfa", []string{"pwd", "sso:acme"}, false, []string{"pwd", "sso:acme"}},
		{"ok/password+security-key", []string{"pwd", "hwk"}, false, []string{"hwk", "pwd", "mfa", "phr"}},
		{"ok/passwordless-verified-passkey", []string{"swk", "user"}, false, []string{"swk", "user", "mfa", "phr"}},
		{"ok/password+otp+passkey", []string{"pwd", "otp", "swk"}, false, []string{"otp", "pwd", "swk", "mfa", "phr"}},
		{"fail/key-without-verification-alone", []string{"hwk"}, false, []string{"hwk"}},
		{"fail/claimed-phr-is-ignored", []string{"pwd", "otp", "phr"}, false, []string{"otp", "pwd", "mfa"}},
		{"fail/upstream-mfa-is-not-phishing-resistant", []string{"sso:acme"}, true, []string{"sso:acme", "mfa"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AMR(tc.factors, tc.upstream); !slices.Equal(got, tc.want) {
				t.Fatalf("AMR(%v, %v) = %v, want %v", tc.factors, tc.upstream, got, tc.want)
			}
		})
	}
}

package tokens

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func seconds(n int64) *int64 { return &n }

func TestMissing(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name     string
		req      Requirements
		amr      []string
		authTime time.Time
		want     Requirements
	}{
		{"ok/nothing-required", Requirements{}, []string{"pwd"}, now, Requirements{}},
		{"ok/mfa-present", Requirements{AMR: []string{"mfa"}}, []string{"otp", "pwd", "mfa"}, now, Requirements{}},
		{"ok/fresh-enough", Requirements{MaxAge: seconds(600)}, []string{"pwd"}, now.Add(-599 * time.Second), Requirements{}},
		{"fail/mfa-missing", Requirements{AMR: []string{"mfa"}}, []string{"pwd"}, now, Requirements{AMR: []string{"mfa"}}},
		{"fail/only-what-is-missing", Requirements{AMR: []string{"mfa", "sso:acme"}}, []string{"otp", "pwd", "mfa"}, now, Requirements{AMR: []string{"sso:acme"}}},
		{"fail/other-provider", Requirements{AMR: []string{"sso:acme"}}, []string{"sso:other"}, now, Requirements{AMR: []string{"sso:acme"}}},
		{"fail/too-old", Requirements{MaxAge: seconds(600)}, []string{"pwd"}, now.Add(-601 * time.Second), Requirements{MaxAge: seconds(600)}},
		{"fail/no-auth-time", Requirements{MaxAge: seconds(600)}, []string{"pwd"}, time.Time{}, Requirements{MaxAge: seconds(600)}},
		{"fail/repeated-requirement-once", Requirements{AMR: []string{"mfa", "mfa"}}, nil, now, Requirements{AMR: []string{"mfa"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Missing(tc.req, tc.amr, tc.authTime, now)
			if !slices.Equal(got.AMR, tc.want.AMR) || (got.MaxAge == nil) != (tc.want.MaxAge == nil) || got.Satisfied() != tc.want.Satisfied() {
				t.Fatalf("Missing = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func now() time.Time { return time.Unix(1_800_000_000, 0) }

func TestChallengeFormats(t *testing.T) {
	m := Requirements{AMR: []string{"mfa", "sso:acme"}}
	if got, want := m.WWWAuthenticate(), `Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", amr="mfa sso:acme"`; got != want {
		t.Errorf("header\n got %s\nwant %s", got, want)
	}
	body, _ := json.Marshal(m.Body())
	var decoded map[string]any
	_ = json.Unmarshal(body, &decoded)
	if decoded["error"] != "insufficient_user_authentication" || decoded["max_age"] != nil || len(decoded["amr"].([]any)) != 2 {
		t.Errorf("body = %s", body)
	}
	want := "Error: Access denied\n" +
		"Service: abcdefg123456-main-bvxea6i--app\n" +
		"User: alice (u_123)\n" +
		`Parameters: {"amr":["mfa","sso:acme"]}` + "\n" +
		"Detail: Additional authentication is required:\n" +
		"\t - Multi-factor authentication (MFA)\n" +
		"\t - Single sign-on (SSO), provider: \"acme\"\n"
	if got := m.SSHDenied("abcdefg123456-main-bvxea6i--app", "alice", "u_123"); got != want {
		t.Errorf("SSH text\n got %q\nwant %q", got, want)
	}
	fresh := Requirements{MaxAge: seconds(300)}
	if got := fresh.WWWAuthenticate(); got != `Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", max_age="300"` {
		t.Errorf("max_age header = %s", got)
	}
	if b, _ := json.Marshal(fresh.Body()); string(b) != `{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: A login within the last 5 minutes","amr":[],"max_age":300}` {
		t.Errorf("max_age body = %s", b)
	}
	// Measured by Missing, the challenge states the whole requirement and
	// its words name only what is missing (RFC 9470: a client that starts
	// a fresh login then asks for everything at once).
	partial := Missing(Requirements{AMR: []string{"mfa", "sso:acme"}, MaxAge: seconds(3600)}, []string{"otp", "pwd", "mfa"}, now(), now())
	if got, want := partial.WWWAuthenticate(), `Bearer error="insufficient_user_authentication", error_description="Additional authentication is required", amr="mfa sso:acme", max_age="3600"`; got != want {
		t.Errorf("partial header\n got %s\nwant %s", got, want)
	}
	if b, _ := json.Marshal(partial.Body()); string(b) != `{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: Single sign-on (SSO), provider: \"acme\"","amr":["mfa","sso:acme"],"max_age":3600}` {
		t.Errorf("partial body = %s", b)
	}
	if got := partial.SSHDenied("svc", "alice", "u_1"); !strings.Contains(got, `Parameters: {"amr":["mfa","sso:acme"],"max_age":3600}`+"\n") ||
		!strings.HasSuffix(got, "Detail: Additional authentication is required:\n\t - Single sign-on (SSO), provider: \"acme\"\n") {
		t.Errorf("partial SSH text = %q", got)
	}
	if got := SSHNoAccess("svc", "bob", "u_bob"); got != "Error: The service doesn't exist or you do not have access to it.\nService: svc\nUser: bob (u_bob)\n" {
		t.Errorf("no access = %q", got)
	}
}

package gateway

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// fakeLookup answers from a map keyed by org/user and records the calls.
type fakeLookup struct {
	answers map[string]access.Answer
	err     error
	calls   []string
}

func (f *fakeLookup) Lookup(_ context.Context, org, userID string) (access.Answer, error) {
	f.calls = append(f.calls, org+"/"+userID)
	if f.err != nil {
		return access.Answer{}, f.err
	}
	return f.answers[org+"/"+userID], nil
}

func TestDecide(t *testing.T) {
	const svc = "abcdefg123456-main-bvxea6i--app"
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	services := map[string]string{svc: "acme"}
	fiveMinutes := int64(300)
	mfa := access.Answer{Member: true, Role: "owner", Requirements: tokens.Requirements{AMR: []string{"mfa"}}}
	mfaSSO := access.Answer{Member: true, Role: "member", Requirements: tokens.Requirements{AMR: []string{"mfa", "sso:acme"}}}
	fresh := access.Answer{Member: true, Role: "member", Requirements: tokens.Requirements{AMR: []string{}, MaxAge: &fiveMinutes}}
	who := func(amr []string, authAgo time.Duration) identity {
		return identity{Username: "alice", UserID: "u_alice", Claims: sshca.Claims{AMR: amr, AuthTime: now.Add(-authAgo).Unix()}}
	}
	for _, tc := range []struct {
		name    string
		service string
		answer  access.Answer
		err     error
		id      identity
		want    string
		asked   bool
	}{
		{"ok/mfa-present", svc, mfa, nil, who([]string{"pwd", "otp", "mfa"}, time.Hour), "", true},
		{"ok/nothing-required", svc, access.Answer{Member: true, Role: "member"}, nil, who([]string{"pwd"}, time.Hour), "", true},
		{"ok/fresh-enough", svc, fresh, nil, who([]string{"pwd"}, time.Minute), "", true},
		{
			"fail/mfa-missing", svc, mfa, nil, who([]string{"pwd"}, time.Minute),
			"Error: Access denied\nService: " + svc + "\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\"]}\n" +
				"Detail: Additional authentication is required:\n\t - Multi-factor authentication (MFA)\n", true,
		},
		{
			"fail/mfa-and-sso-missing", svc, mfaSSO, nil, who([]string{"pwd"}, time.Minute),
			"Error: Access denied\nService: " + svc + "\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\",\"sso:acme\"]}\n" +
				"Detail: Additional authentication is required:\n\t - Multi-factor authentication (MFA)\n\t - Single sign-on (SSO), provider: \"acme\"\n", true,
		},
		{
			"fail/only-sso-missing", svc, mfaSSO, nil, who([]string{"pwd", "otp", "mfa"}, time.Minute),
			"Error: Access denied\nService: " + svc + "\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\",\"sso:acme\"]}\n" +
				"Detail: Additional authentication is required:\n\t - Single sign-on (SSO), provider: \"acme\"\n", true,
		},
		{
			"fail/too-old", svc, fresh, nil, who([]string{"pwd"}, time.Hour),
			tokens.Requirements{MaxAge: &fiveMinutes}.SSHDenied(svc, "alice", "u_alice"), true,
		},
		{
			"fail/no-auth-time", svc, fresh, nil, identity{Username: "alice", UserID: "u_alice", Claims: sshca.Claims{AMR: []string{"pwd"}}},
			tokens.Requirements{MaxAge: &fiveMinutes}.SSHDenied(svc, "alice", "u_alice"), true,
		},
		{
			"fail/not-a-member", svc, access.Answer{}, nil, who([]string{"pwd", "otp", "mfa"}, time.Minute),
			"Error: The service doesn't exist or you do not have access to it.\nService: " + svc + "\nUser: alice (u_alice)\n", true,
		},
		{
			"fail/unknown-service", "nosuch", mfa, nil, who([]string{"pwd", "otp", "mfa"}, time.Minute),
			"Error: The service doesn't exist or you do not have access to it.\nService: nosuch\nUser: alice (u_alice)\n", false,
		},
		{"fail/server-unavailable", svc, access.Answer{}, errors.New("connection refused"), who([]string{"pwd", "otp", "mfa"}, time.Minute), unavailableText, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeLookup{answers: map[string]access.Answer{"acme/u_alice": tc.answer}, err: tc.err}
			got, err := decide(context.Background(), f, services, tc.service, tc.id, now)
			if got != tc.want {
				t.Errorf("text:\n%q\nwant:\n%q", got, tc.want)
			}
			if (err != nil) != (tc.err != nil) {
				t.Errorf("err = %v, want %v", err, tc.err)
			}
			if wantCalls := map[bool][]string{true: {"acme/u_alice"}, false: nil}[tc.asked]; !slices.Equal(f.calls, wantCalls) {
				t.Errorf("lookups = %v, want %v", f.calls, wantCalls)
			}
		})
	}
}

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"whoami", []string{"whoami"}, false},
		{"  echo   hello  world ", []string{"echo", "hello", "world"}, false},
		{"git-upload-pack 'repo.git'", []string{"git-upload-pack", "repo.git"}, false},
		{"git-receive-pack '/srv/my repo.git'", []string{"git-receive-pack", "/srv/my repo.git"}, false},
		{`echo "a \"b\" \$c \d" e\ f ''`, []string{"echo", `a "b" $c \d`, "e f", ""}, false},
		{`echo 'it'\''s'`, []string{"echo", "it's"}, false},
		{"", nil, false},
		{"echo 'open", nil, true},
		{`echo "open`, nil, true},
		{`echo \`, nil, true},
	} {
		got, err := splitWords(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestGitVerb(t *testing.T) {
	for in, want := range map[string]string{
		"git-upload-pack 'repo.git'":  "git-upload-pack",
		"git-receive-pack '/x.git'":   "git-receive-pack",
		"git upload-pack 'repo.git'":  "git-upload-pack",
		"git-upload-archive 'r.git'":  "",
		"git-upload-pack":             "",
		"git-upload-pack a b":         "",
		"git status 'x'":              "",
		"git-receive-pack --help foo": "",
	} {
		words, _ := splitWords(in)
		if got := gitVerb(words); got != want {
			t.Errorf("gitVerb(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Issuer: "https://id.example.com", Services: map[string]string{"app-1": "acme"}, ClientID: "gw", ClientSecret: "s"}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		says string
	}{
		{"ok/https", func(*Config) {}, ""},
		{"ok/http-on-loopback", func(c *Config) { c.Issuer = "http://127.0.0.1:8080" }, ""},
		{"ok/http-on-localhost", func(c *Config) { c.Issuer = "http://localhost:8080" }, ""},
		{"fail/no-issuer", func(c *Config) { c.Issuer = "" }, "absolute http(s) URL"},
		{"fail/relative-issuer", func(c *Config) { c.Issuer = "/oauth" }, "absolute http(s) URL"},
		{"fail/http-elsewhere", func(c *Config) { c.Issuer = "http://id.example.com" }, "use https"},
		{"fail/no-credentials", func(c *Config) { c.ClientSecret = "" }, "client id and secret"},
		{"fail/no-services", func(c *Config) { c.Services = nil }, "no services"},
		{"fail/path-in-service-id", func(c *Config) { c.Services = map[string]string{"../x": "acme"} }, `"../x" must be`},
		{"fail/service-without-org", func(c *Config) { c.Services = map[string]string{"app": ""} }, "no organization"},
		{"fail/negative-timeout", func(c *Config) { c.HandshakeTimeout = -time.Second }, "HandshakeTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
				t.Fatalf("err = %v, want one saying %q", err, tc.says)
			}
		})
	}
}

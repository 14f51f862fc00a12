package gateway

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/internal/gateway/revoked"
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

// fakeRevocations answers Status from a set, or Unknown with err.
type fakeRevocations struct {
	serials map[uint64]bool
	err     error
}

func (f fakeRevocations) Status(serial uint64) (revoked.Status, error) {
	switch {
	case f.serials[serial]:
		return revoked.Revoked, nil
	case f.err != nil:
		return revoked.Unknown, f.err
	}
	return revoked.Good, nil
}

// TestDecide: one table of attempts, each decided once and rendered three
// ways (the SSH text, the principals helper's log line, the HTTP answer),
// which must tell the same story.
func TestDecide(t *testing.T) {
	const svc = "abcdefg123456-main-bvxea6i--app"
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	services := map[string]string{svc: "acme"}
	fiveMinutes := int64(300)
	mfa := access.Answer{Member: true, Role: "owner", Requirements: tokens.Requirements{AMR: []string{"mfa"}}}
	mfaSSO := access.Answer{Member: true, Role: "member", Requirements: tokens.Requirements{AMR: []string{"mfa", "sso:acme"}}}
	fresh := access.Answer{Member: true, Role: "member", Requirements: tokens.Requirements{AMR: []string{}, MaxAge: &fiveMinutes}}
	who := func(amr []string, authAgo time.Duration) identity {
		return identity{Username: "alice", UserID: "u_alice", Claims: sshca.Claims{AMR: amr, AuthTime: now.Add(-authAgo).Unix()}, Serial: 7}
	}
	strong := who([]string{"pwd", "otp", "mfa"}, time.Minute)
	const (
		noAccessText = "Error: The service doesn't exist or you do not have access to it.\nService: " + svc + "\nUser: alice (u_alice)\n"
		notFoundBody = `{"error":"not_found","error_description":"The service doesn't exist or you do not have access to it."}`
		revokedText  = "Error: This SSH certificate has been revoked.\nService: " + svc + "\nUser: alice (u_alice)\nDetail: Log in again for a new certificate: stepup login\n"
	)
	const what = `certificate ID "u_alice" (serial 7) for account "alice"`
	stale := &revoked.StaleError{Age: 40 * time.Second, Err: errors.New("GET /ssh/revoked: 503")}
	for _, tc := range []struct {
		name        string
		service     string
		answer      access.Answer
		err         error
		revocations fakeRevocations
		id          identity
		kind        Kind
		ssh         string
		log         string // HelperLog(what)
		status      int
		body        string // "" not checked
		asked       bool
	}{
		{"ok/mfa-present", svc, mfa, nil, fakeRevocations{}, who([]string{"pwd", "otp", "mfa"}, time.Hour), Allow, "", "",
			200, `{"service":"` + svc + `","org":"acme"}`, true},
		{"ok/nothing-required", svc, access.Answer{Member: true, Role: "member"}, nil, fakeRevocations{}, who([]string{"pwd"}, time.Hour), Allow, "", "", 200, "", true},
		{"ok/fresh-enough", svc, fresh, nil, fakeRevocations{}, who([]string{"pwd"}, time.Minute), Allow, "", "", 200, "", true},
		{
			"fail/mfa-missing", svc, mfa, nil, fakeRevocations{}, who([]string{"pwd"}, time.Minute), Missing,
			"Error: Access denied\nService: " + svc + "\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\"]}\n" +
				"Detail: Additional authentication is required:\n\t - Multi-factor authentication (MFA)\n",
			`refused ` + what + `: organization "acme" requires more authentication: Multi-factor authentication (MFA)`,
			401, `{"error":"insufficient_user_authentication","error_description":"Additional authentication is required: Multi-factor authentication (MFA)","amr":["mfa"]}`, true,
		},
		{
			"fail/mfa-and-sso-missing", svc, mfaSSO, nil, fakeRevocations{}, who([]string{"pwd"}, time.Minute), Missing,
			"Error: Access denied\nService: " + svc + "\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\",\"sso:acme\"]}\n" +
				"Detail: Additional authentication is required:\n\t - Multi-factor authentication (MFA)\n\t - Single sign-on (SSO), provider: \"acme\"\n",
			`refused ` + what + `: organization "acme" requires more authentication: Multi-factor authentication (MFA); Single sign-on (SSO), provider: "acme"`,
			401, "", true,
		},
		{
			"fail/only-sso-missing", svc, mfaSSO, nil, fakeRevocations{}, strong, Missing,
			"Error: Access denied\nService: " + svc + "\nUser: alice (u_alice)\nParameters: {\"amr\":[\"mfa\",\"sso:acme\"]}\n" +
				"Detail: Additional authentication is required:\n\t - Single sign-on (SSO), provider: \"acme\"\n",
			`refused ` + what + `: organization "acme" requires more authentication: Single sign-on (SSO), provider: "acme"`, 401, "", true,
		},
		{
			"fail/too-old", svc, fresh, nil, fakeRevocations{}, who([]string{"pwd"}, time.Hour), Missing,
			tokens.Requirements{MaxAge: &fiveMinutes}.SSHDenied(svc, "alice", "u_alice"),
			`refused ` + what + `: organization "acme" requires more authentication: A login within the last 5 minutes`, 401, "", true,
		},
		{
			"fail/no-auth-time", svc, fresh, nil, fakeRevocations{}, identity{Username: "alice", UserID: "u_alice", Claims: sshca.Claims{AMR: []string{"pwd"}}, Serial: 7}, Missing,
			tokens.Requirements{MaxAge: &fiveMinutes}.SSHDenied(svc, "alice", "u_alice"), "", 401, "", true,
		},
		{"fail/not-a-member", svc, access.Answer{}, nil, fakeRevocations{}, strong, NoAccess, noAccessText,
			`refused ` + what + `: "u_alice" is not a member of organization "acme"`, 404, notFoundBody, true},
		{"fail/unknown-service", "nosuch", mfa, nil, fakeRevocations{}, strong, NoAccess,
			"Error: The service doesn't exist or you do not have access to it.\nService: nosuch\nUser: alice (u_alice)\n",
			`refused ` + what + `: there is no service "nosuch"`, 404, notFoundBody, false},
		{"fail/server-unavailable", svc, access.Answer{}, errors.New("connection refused"), fakeRevocations{}, strong, Unavailable, unavailableText,
			"no answer for " + what + ": connection refused",
			503, `{"error":"temporarily_unavailable","error_description":"The access service is unavailable; try again shortly."}`, true},
		// The list is asked first, and settles it without the server.
		{"fail/revoked", svc, mfa, nil, fakeRevocations{serials: map[uint64]bool{7: true}}, strong, Revoked, revokedText,
			`refused ` + what + `: it has been revoked`,
			401, `{"error":"invalid_token","error_description":"This credential has been revoked: log in again."}`, false},
		{"fail/revoked-while-list-stale", svc, mfa, nil, fakeRevocations{serials: map[uint64]bool{7: true}, err: stale}, strong, Revoked, revokedText, "", 401, "", false},
		{"fail/list-stale", svc, mfa, nil, fakeRevocations{err: stale}, strong, Unavailable, staleListText,
			"no answer for " + what + ": the SSH revocation list is 40s old: GET /ssh/revoked: 503", 503, "", false},
		{"ok/other-serial-revoked", svc, mfa, nil, fakeRevocations{serials: map[uint64]bool{8: true}}, strong, Allow, "", "", 200, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeLookup{answers: map[string]access.Answer{"acme/u_alice": tc.answer}, err: tc.err}
			d := Decide(context.Background(), Policy{Services: services, Access: f, Revocations: tc.revocations, Now: func() time.Time { return now }}, tc.id.attempt(tc.service))
			if d.Kind != tc.kind {
				t.Fatalf("kind %v, want %v (%+v)", d.Kind, tc.kind, d)
			}
			if got := d.SSHText(); got != tc.ssh {
				t.Errorf("SSH text:\n%q\nwant:\n%q", got, tc.ssh)
			}
			if got := d.HelperLog(what); (tc.log != "" || tc.kind == Allow) && got != tc.log {
				t.Errorf("helper log:\n%q\nwant:\n%q", got, tc.log)
			}
			rec := httptest.NewRecorder()
			d.WriteHTTP(rec)
			if rec.Code != tc.status || (tc.body != "" && strings.TrimSpace(rec.Body.String()) != tc.body) {
				t.Errorf("HTTP %d %s, want %d %s", rec.Code, rec.Body, tc.status, tc.body)
			}
			// The three say the same: refused everywhere or nowhere; a
			// step-up challenge exactly where the SSH text has its
			// Parameters line; unavailable as 503 and "no answer".
			refusedSSH, refusedHTTP := tc.ssh != "", rec.Code != 200
			if refusedSSH != refusedHTTP || refusedSSH != (d.HelperLog(what) != "") {
				t.Errorf("renderings disagree: SSH %q, HTTP %d, log %q", tc.ssh, rec.Code, d.HelperLog(what))
			}
			if strings.Contains(tc.ssh, "Parameters:") != (rec.Header().Get("WWW-Authenticate") != "" && strings.Contains(rec.Header().Get("WWW-Authenticate"), "insufficient_user_authentication")) {
				t.Errorf("a challenge in one rendering only: SSH %q, WWW-Authenticate %q", tc.ssh, rec.Header().Get("WWW-Authenticate"))
			}
			if (tc.kind == Unavailable) != (rec.Code == 503) || (tc.kind == Unavailable) != strings.HasPrefix(d.HelperLog(what), "no answer") {
				t.Errorf("unavailable rendered as HTTP %d, log %q", rec.Code, d.HelperLog(what))
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

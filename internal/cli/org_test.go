package cli

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testserver"
)

// newOrgEnv runs a real server with an organization that requires
// nothing: alice owns it and bob is a member. Bob alone is in "bobs";
// in "beta" bob owns and alice is a member.
func newOrgEnv(t *testing.T) *cliEnv {
	t.Helper()
	issuer := testserver.Start(t, authz.Config{
		Clients: []authz.Client{{
			ID: DefaultClientID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none",
		}},
		Users: []authz.User{
			{ID: "u_alice", Username: "alice", Email: "alice@example.com", Name: "Alice", PasswordHash: aliceHash(), EmailVerified: true},
			{ID: "u_bob", Username: "bob", Email: "bob@example.com", Name: "Bob", PasswordHash: aliceHash(), EmailVerified: true},
		},
		Orgs: []authz.Org{
			{ID: "acme", Name: "ACME", Members: []authz.Member{{UserID: "u_alice", Role: "owner"}, {UserID: "u_bob", Role: "member"}}},
			{ID: "bobs", Name: "Bob's", Members: []authz.Member{{UserID: "u_bob", Role: "owner"}}},
			{ID: "beta", Name: "Beta", Members: []authz.Member{{UserID: "u_bob", Role: "owner"}, {UserID: "u_alice", Role: "member"}}},
		},
	})
	return &cliEnv{t: t, issuer: issuer, dir: t.TempDir()}
}

func TestOrgCommands(t *testing.T) {
	e := newOrgEnv(t)
	e.mustRun("login")

	r := e.mustRun("org:security", "acme")
	for _, want := range []string{"Organization: ACME (acme)", "MFA required: no", "SSO provider: none"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("org:security lacks %q:\n%s", want, r.stdout)
		}
	}

	r = e.mustRun("org:users", "acme")
	for _, row := range []string{`alice\s+alice@example\.com\s+owner\s+off\s+never`, `bob\s+bob@example\.com\s+member\s+off\s+never`} {
		if !regexp.MustCompile(row).MatchString(r.stdout) {
			t.Errorf("org:users lacks a row matching %s:\n%s", row, r.stdout)
		}
	}
	if !strings.HasPrefix(r.stdout, "USERNAME") {
		t.Errorf("org:users has no header:\n%s", r.stdout)
	}

	// Alice has no MFA of her own, so she cannot require it.
	r = e.run("org:security", "acme", "--mfa-required", "on")
	if r.code == 0 || !strings.Contains(r.stderr, "Turn on multi-factor authentication for your own account first at "+e.issuer+"/account/security") {
		t.Errorf("org:security --mfa-required on: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if r := e.mustRun("org:security", "acme"); !strings.Contains(r.stdout, "MFA required: no") {
		t.Errorf("the refused change took effect:\n%s", r.stdout)
	}

	r = e.mustRun("org:remind", "acme", "--all-without-mfa")
	if !strings.Contains(r.stdout, "Sent: u_alice, u_bob") {
		t.Errorf("org:remind:\n%s", r.stdout)
	}
	r = e.mustRun("org:remind", "acme", "--all-without-mfa")
	if !strings.Contains(r.stdout, "Sent: nobody") || !strings.Contains(r.stdout, "u_alice: reminded recently") || !strings.Contains(r.stdout, "u_bob: reminded recently") {
		t.Errorf("second org:remind:\n%s", r.stdout)
	}
	r = e.mustRun("org:users", "acme", "--without-mfa")
	if strings.Contains(r.stdout, "never") || !strings.Contains(r.stdout, "bob") {
		t.Errorf("org:users after reminding:\n%s", r.stdout)
	}

	// One form or the other.
	for _, args := range [][]string{{"org:remind", "acme"}, {"org:remind", "acme", "u_bob", "--all-without-mfa"}} {
		if r := e.run(args...); r.code != ExitError || !strings.Contains(r.stderr, "--all-without-mfa") {
			t.Errorf("%v: exit %d: %s", args, r.code, r.stderr)
		}
	}

	for _, org := range []string{"bobs", "nope"} {
		r = e.run("org:security", org)
		if r.code != ExitError || !strings.Contains(r.stderr, "No organization "+org+" that you can see.") {
			t.Errorf("org:security %s: exit %d: %s", org, r.code, r.stderr)
		}
	}
}

// A plain member may look at the settings but not list or remind; the
// server's words say why.
func TestOrgCommandsForbiddenToMembers(t *testing.T) {
	e := newOrgEnv(t)
	e.mustRun("login")
	if r := e.mustRun("org:security", "beta"); !strings.Contains(r.stdout, "Organization: Beta (beta)") {
		t.Errorf("org:security beta:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"org:users", "beta"}, {"org:remind", "beta", "u_bob"}, {"org:security", "beta", "--sso-provider", "none"}} {
		r := e.run(args...)
		if r.code != ExitError || !strings.Contains(r.stderr, "Only the organization's owners and admins can do this; your role is member.") {
			t.Errorf("%v: exit %d: %s", args, r.code, r.stderr)
		}
	}
}

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
// in "beta" bob owns and alice is a member; in "gamma" bob owns and alice
// is an admin.
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
			{ID: "gamma", Name: "Gamma", Members: []authz.Member{{UserID: "u_bob", Role: "owner"}, {UserID: "u_alice", Role: "admin"}}},
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
	// The ids are what org:remind and org:role take.
	for _, row := range []string{`(?m)^u_alice\s+alice\s+alice@example\.com\s+owner\s+off\s+never$`, `(?m)^u_bob\s+bob\s+bob@example\.com\s+member\s+off\s+never$`} {
		if !regexp.MustCompile(row).MatchString(r.stdout) {
			t.Errorf("org:users lacks a row matching %s:\n%s", row, r.stdout)
		}
	}
	if !regexp.MustCompile(`^ID\s+USERNAME\s+EMAIL\s+ROLE\s+MFA\s+LAST REMINDED\n`).MatchString(r.stdout) {
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
	// alice asks, and is not sent a reminder herself.
	if !strings.Contains(r.stdout, "Sent: u_bob\n") || !strings.Contains(r.stdout, "u_alice: that is you") {
		t.Errorf("org:remind:\n%s", r.stdout)
	}
	r = e.mustRun("org:remind", "acme", "--all-without-mfa")
	if !strings.Contains(r.stdout, "Sent: nobody") || !strings.Contains(r.stdout, "u_alice: that is you") || !strings.Contains(r.stdout, "u_bob: reminded recently") {
		t.Errorf("second org:remind:\n%s", r.stdout)
	}
	r = e.mustRun("org:users", "acme", "--without-mfa")
	if !regexp.MustCompile(`u_alice .* never\n`).MatchString(r.stdout) || !regexp.MustCompile(`u_bob .* \d{4}-\d\d-\d\d \d\d:\d\d`).MatchString(r.stdout) {
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

// The membership commands against the real server: alice creates an
// organization, lists members page by page, changes roles, removes bob,
// and leaves; every refusal is said in words she can act on.
func TestOrgMembershipCommands(t *testing.T) {
	e := newOrgEnv(t)
	e.mustRun("login")
	// One member a page, so that listing two follows "next".
	pageSize(t, 1)

	expect := func(args []string, code int, want ...string) {
		t.Helper()
		r := e.run(args...)
		out := r.stdout
		if code != 0 {
			out = r.stderr
		}
		ok := r.code == code
		for _, w := range want {
			ok = ok && regexp.MustCompile(w).MatchString(out)
		}
		if !ok {
			t.Errorf("stepup %s: exit %d, want %d and %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, want, r.stdout, r.stderr)
		}
	}

	expect([]string{"org:create", "acme-2", "--name", "ACME 2"}, 0, `^Created acme-2; you are its owner\.\nOrganization: ACME 2 \(acme-2\)\n`)
	expect([]string{"org:security", "acme-2"}, 0, `Organization: ACME 2 \(acme-2\)`)
	expect([]string{"org:members", "acme-2"}, 0, `(?m)^u_alice\s+alice\s+owner\s+off$`)
	expect([]string{"org:create", "acme"}, ExitError, `Error: There is already an organization acme: choose another id\.`)
	expect([]string{"org:create", "Acme_2"}, ExitError, `"Acme_2" is not a valid organization id: use 2 to 63 lower-case letters`)
	expect([]string{"org:leave", "acme-2"}, ExitError, `acme-2 must keep an owner and you are its last: make someone else an owner first \(stepup org:role acme-2 USER owner\), then leave\.`)

	expect([]string{"org:members", "acme"}, 0, `^ID\s+USERNAME\s+ROLE\s+MFA\n`, `(?m)^u_alice\s+alice\s+owner\s+off$`, `(?m)^u_bob\s+bob\s+member\s+off$`)
	expect([]string{"org:users", "acme", "--without-mfa"}, 0, `(?m)^u_alice\s`, `(?m)^u_bob\s`)
	expect([]string{"org:members", "acme", "--json"}, 0, `"id": "u_alice"`, `"id": "u_bob"`, `"mfa_enabled": false`)

	// USER is a username or an id.
	expect([]string{"org:role", "acme", "bob", "admin"}, 0, `^bob \(u_bob\) is now an admin of acme\.\n$`)
	expect([]string{"org:members", "acme"}, 0, `(?m)^u_bob\s+bob\s+admin\s+off$`)
	expect([]string{"org:role", "acme", "u_bob", "member"}, 0, `^bob \(u_bob\) is now a member of acme\.\n$`)
	expect([]string{"org:role", "acme", "alice", "member"}, ExitError, `acme must keep an owner: make someone else an owner first \(stepup org:role acme USER owner\), then change alice's role\.`)
	expect([]string{"org:role", "acme", "carol", "admin"}, ExitError, `carol is not a member of acme \(stepup org:members acme lists who is\)\.`)
	expect([]string{"org:role", "acme", "bob", "boss"}, ExitError, `"boss" is not a role: use owner, admin or member`)
	expect([]string{"org:role", "beta", "bob", "member"}, ExitError, `Only the organization's owners and admins manage its members; your role is member\.`)
	expect([]string{"org:role", "gamma", "alice", "owner"}, ExitError, `Only owners make, demote or remove owners; your role is admin\.`)
	expect([]string{"org:remove", "gamma", "bob"}, ExitError, `Only owners make, demote or remove owners; your role is admin\.`)
	expect([]string{"org:role", "bobs", "bob", "admin"}, ExitError, `No organization bobs that you can see\.`)

	expect([]string{"org:remove", "acme", "bob"}, 0, `^Removed bob from acme\.\n$`)
	if r := e.mustRun("org:members", "acme"); strings.Contains(r.stdout, "bob") {
		t.Errorf("bob is still listed:\n%s", r.stdout)
	}
	expect([]string{"org:remove", "acme", "bob"}, ExitError, `bob is not a member of acme`)

	expect([]string{"org:leave", "beta"}, 0, `^You have left beta\.\n$`)
	expect([]string{"org:security", "beta"}, ExitError, `No organization beta that you can see\.`)
	expect([]string{"org:leave", "beta"}, ExitError, `No organization beta that you are a member of\.`)
}

// An organization that requires MFA: without a person at the terminal,
// a membership change says what to run and exits 3.
func TestOrgMembershipStepUp(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	r := e.run("org:role", "acme", "alice", "owner", "--no-interaction")
	if r.code != ExitStepUp || !strings.Contains(r.stderr, "  stepup login --method mfa\n") {
		t.Errorf("exit %d, want %d\nstderr: %s", r.code, ExitStepUp, r.stderr)
	}
}

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/quotedprintable"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testserver"
)

// newInvitationAPI is a fake server with the invitation API's contract,
// which records every request (apiCalls). The caller is an admin of
// "acme": inviting an owner is refused, bounce@example.com's email cannot
// be sent, and the open invitations are inv_1, -dash (an id that looks
// like a flag), owned (an owner's, which an admin may not touch), bounce
// (whose email fails again) and the two of bounce@example.com. "beta":
// the caller is a member. "full" has too many invitations, "lost" makes
// them but cannot list them, "quiet" refuses without words, "empty" has
// none, "strict" demands MFA. Anything else does not exist.
func newInvitationAPI(t *testing.T) *memberAPI {
	f := &memberAPI{t: t}
	expires := time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)
	inv := func(id, email, role string, created time.Time) map[string]any {
		return map[string]any{"id": id, "email": email, "role": role, "invited_by": "u_me",
			"created": created.Format(time.RFC3339), "expires": created.Add(7 * 24 * time.Hour).Format(time.RFC3339)}
	}
	week := expires.Add(-7 * 24 * time.Hour)
	acme := []map[string]any{
		inv("inv_1", "erin@example.com", "member", week),
		inv("-dash", "dash@example.com", "admin", week.Add(-time.Hour)),
		inv("owned", "olga@example.com", "owner", week.Add(-2*time.Hour)),
		inv("bounce", "gone@example.com", "member", week.Add(-3*time.Hour)),
		// bounce@example.com invited twice: the newer one is the one
		// whose email just failed.
		inv("-new", "bounce@example.com", "member", week),
		inv("old", "bounce@example.com", "member", week.Add(-time.Minute)),
	}
	acme[0]["extra"] = "kept"
	known := func(org string) bool {
		switch org {
		case "acme", "beta", "full", "lost", "quiet", "empty":
			return true
		}
		return false
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]any{
			"issuer": f.ts.URL, "authorization_endpoint": f.ts.URL + "/oauth2/authorize",
			"token_endpoint": f.ts.URL + "/oauth2/token", "authorization_response_iss_parameter_supported": true,
		})
	})
	mux.HandleFunc("GET /api/orgs/{org}", func(w http.ResponseWriter, r *http.Request) {
		if org := r.PathValue("org"); known(org) {
			writeTestJSON(w, 200, map[string]any{"id": org, "name": strings.ToUpper(org), "mfa_required": false, "sso_provider": ""})
			return
		}
		refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
	})
	mux.HandleFunc("POST /api/orgs/{org}/invitations", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Email, Role string }
		json.NewDecoder(r.Body).Decode(&in)
		org := r.PathValue("org")
		switch {
		case !known(org):
			refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
		case !strings.Contains(in.Email, "@") || strings.Contains(in.Email, "<"):
			refuse(w, 400, "invalid_request", "The email must be a plain address like bob@example.com.")
		case in.Email == "odd@example.com":
			refuse(w, 400, "invalid_request", "")
		case org == "beta":
			refuse(w, 403, "access_denied", "Only the organization's owners and admins manage its members; your role is member.")
		case org == "quiet":
			refuse(w, 403, "access_denied", "")
		case in.Role == "owner":
			refuse(w, 403, "access_denied", "Only owners make, demote or remove owners; your role is admin.")
		case org == "full":
			refuse(w, 409, "too_many_invitations", "The organization has 1000 open invitations; revoke some first.")
		case in.Email == "bounce@example.com", org == "lost":
			refuse(w, 502, "delivery_failed", "The invitation was made but its email could not be sent; resend it later (POST …/invitations/-new/resend).")
		default:
			writeTestJSON(w, 201, inv("inv_new", in.Email, in.Role, week))
		}
	})
	mux.HandleFunc("GET /api/orgs/{org}/invitations", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("org") {
		case "acme":
			writeTestJSON(w, 200, map[string]any{"invitations": acme})
		case "empty":
			writeTestJSON(w, 200, map[string]any{"invitations": []any{}})
		case "beta":
			refuse(w, 403, "access_denied", "Only the organization's owners and admins can do this; your role is member.")
		case "lost":
			writeTestJSON(w, 500, map[string]any{"error": "server_error"})
		default:
			refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
		}
	})
	// invitation answers a refusal for what resend and revoke refuse
	// alike, and says whether the request may go on.
	invitation := func(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
		org, id := r.PathValue("org"), r.PathValue("id")
		switch {
		case !known(org):
			refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
		case org == "beta":
			refuse(w, 403, "access_denied", "Only the organization's owners and admins can do this; your role is member.")
		case org == "quiet":
			refuse(w, 403, "access_denied", "")
		case org == "acme" && id == "owned":
			refuse(w, 403, "access_denied", "Only owners make, demote or remove owners; your role is admin.")
		case org == "acme":
			for _, i := range acme {
				if i["id"] == id {
					return i, true
				}
			}
			fallthrough
		default:
			refuse(w, 404, "not_found", "There is no open invitation with that id; it may have been accepted, revoked or have expired.")
		}
		return nil, false
	}
	mux.HandleFunc("POST /api/orgs/{org}/invitations/{id}/resend", func(w http.ResponseWriter, r *http.Request) {
		if i, ok := invitation(w, r); ok {
			if i["id"] == "bounce" {
				refuse(w, 502, "delivery_failed", "The email could not be sent; try again later.")
				return
			}
			writeTestJSON(w, 200, inv(i["id"].(string), i["email"].(string), i["role"].(string), expires))
		}
	})
	mux.HandleFunc("DELETE /api/orgs/{org}/invitations/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := invitation(w, r); ok {
			w.WriteHeader(http.StatusNoContent)
		}
	})
	f.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{r.Method, r.RequestURI, r.Header.Get("Authorization"), string(body)})
		f.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/api/orgs/strict") {
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_user_authentication", amr="mfa"`)
			writeTestJSON(w, 401, map[string]any{"error": "insufficient_user_authentication", "error_description": "MFA required", "amr": []string{"mfa"}})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.ts.Close)
	return f
}

func TestInvitationCommandsFake(t *testing.T) {
	f := newInvitationAPI(t)
	e := f.env()
	const resendHint = "(rather than inviting again, which would make a second invitation)."
	cases := []struct {
		args  []string
		code  int
		out   string // in stdout on success, stderr otherwise
		calls []string
	}{
		// A member by default; the date is the one in the email.
		{[]string{"org:invite", "acme", "erin@example.com"}, 0,
			"Invited erin@example.com to acme as a member; the link in the email works once, until 10 December 2026.\n",
			[]string{`POST /api/orgs/acme/invitations {"email":"erin@example.com","role":"member"}`}},
		{[]string{"org:invite", "acme", "frank@example.com", "--role", "Admin"}, 0,
			"Invited frank@example.com to acme as an admin; the link in the email works once, until 10 December 2026.\n",
			[]string{`POST /api/orgs/acme/invitations {"email":"frank@example.com","role":"admin"}`}},
		// ORG goes to the server escaped.
		{[]string{"org:invite", "a/b", "erin@example.com"}, ExitError, "No organization a/b that you can see.",
			[]string{`POST /api/orgs/a%2Fb/invitations {"email":"erin@example.com","role":"member"}`}},
		{[]string{"org:invite", "acme", "erin@example.com", "--role", "boss"}, ExitError, `--role "boss" is not a role: use member, admin or owner`, nil},
		{[]string{"org:invite", "acme", " "}, ExitError, "EMAIL is empty", nil},
		{[]string{"org:invite", "acme"}, ExitError, "accepts 2 arg(s)", nil},
		{[]string{"org:invite", "acme", "Erin <erin@example.com>"}, ExitError,
			`"Erin <erin@example.com>" is not an email address: give a plain address like erin@example.com.`,
			[]string{`POST /api/orgs/acme/invitations {"email":"Erin \u003cerin@example.com\u003e","role":"member"}`}},
		{[]string{"org:invite", "acme", "odd@example.com"}, ExitError,
			"The server refused to invite odd@example.com as a member: check the address, and use the role member, admin or owner.",
			[]string{`POST /api/orgs/acme/invitations {"email":"odd@example.com","role":"member"}`}},
		{[]string{"org:invite", "acme", "olga@example.com", "--role", "owner"}, ExitError,
			"Error: Only owners make, demote or remove owners; your role is admin. Ask one of acme's owners to send the invitation.\n",
			[]string{`POST /api/orgs/acme/invitations {"email":"olga@example.com","role":"owner"}`}},
		{[]string{"org:invite", "beta", "erin@example.com"}, ExitError,
			"Error: Only the organization's owners and admins manage its members; your role is member. Ask one of beta's owners or admins to send the invitation.\n",
			[]string{`POST /api/orgs/beta/invitations {"email":"erin@example.com","role":"member"}`}},
		{[]string{"org:invite", "quiet", "erin@example.com", "--role", "admin"}, ExitError,
			"You may not invite people to quiet as an admin. Ask one of quiet's owners or admins to send the invitation.",
			[]string{`POST /api/orgs/quiet/invitations {"email":"erin@example.com","role":"admin"}`}},
		{[]string{"org:invite", "full", "erin@example.com"}, ExitError,
			"full has as many open invitations as it may have: revoke some first (stepup invitations full lists them; stepup invitations:revoke full ID revokes one), then invite again.",
			[]string{`POST /api/orgs/full/invitations {"email":"erin@example.com","role":"member"}`}},
		// The invitation exists although its email failed: the CLI finds
		// its id (the newer of two, and one that needs "--").
		{[]string{"org:invite", "acme", "bounce@example.com"}, ExitError,
			"Error: The invitation of bounce@example.com to acme was made (id -new), but its email could not be sent. Send it later with\n  stepup invitations:resend acme -- -new\n" + resendHint + "\n",
			[]string{`POST /api/orgs/acme/invitations {"email":"bounce@example.com","role":"member"}`, "GET /api/orgs/acme/invitations"}},
		{[]string{"org:invite", "lost", "erin@example.com"}, ExitError,
			"The invitation of erin@example.com to lost was made, but its email could not be sent. Find its id with stepup invitations lost, then send it later with\n  stepup invitations:resend lost ID\n" + resendHint,
			[]string{`POST /api/orgs/lost/invitations {"email":"erin@example.com","role":"member"}`, "GET /api/orgs/lost/invitations"}},
		{[]string{"org:invite", "strict", "erin@example.com", "--no-interaction"}, ExitStepUp, "stepup login --method mfa",
			[]string{`POST /api/orgs/strict/invitations {"email":"erin@example.com","role":"member"}`}},

		{[]string{"invitations", "empty"}, 0, "No open invitations.\n", []string{"GET /api/orgs/empty/invitations"}},
		{[]string{"invitations", "beta"}, ExitError, "Only the organization's owners and admins can do this; your role is member.",
			[]string{"GET /api/orgs/beta/invitations"}},
		{[]string{"invitations", "nope"}, ExitError, "No organization nope that you can see.", []string{"GET /api/orgs/nope/invitations"}},
		{[]string{"invitations", "strict", "--no-interaction"}, ExitStepUp, "stepup login --method mfa", []string{"GET /api/orgs/strict/invitations"}},

		{[]string{"invitations:resend", "acme", "inv_1"}, 0,
			"Sent invitation inv_1 of acme to erin@example.com again; the earlier link no longer works, the new one works once, until 17 December 2026.\n",
			[]string{"POST /api/orgs/acme/invitations/inv_1/resend"}},
		{[]string{"invitations:resend", "acme", "--", "-dash"}, 0, "Sent invitation -dash of acme to dash@example.com again",
			[]string{"POST /api/orgs/acme/invitations/-dash/resend"}},
		{[]string{"invitations:resend", "acme", "bounce"}, ExitError,
			"Error: Invitation bounce of acme has a new link, but its email could not be sent, and the link of the earlier email no longer works. Try again later:\n  stepup invitations:resend acme bounce\n",
			[]string{"POST /api/orgs/acme/invitations/bounce/resend"}},
		// A 404 is told apart by asking for the organization.
		{[]string{"invitations:resend", "acme", "gone"}, ExitError,
			"acme has no open invitation gone: it may have been accepted, revoked or have expired (stepup invitations acme lists the open ones).",
			[]string{"POST /api/orgs/acme/invitations/gone/resend", "GET /api/orgs/acme"}},
		{[]string{"invitations:resend", "nope", "inv_1"}, ExitError, "No organization nope that you can see.",
			[]string{"POST /api/orgs/nope/invitations/inv_1/resend", "GET /api/orgs/nope"}},
		{[]string{"invitations:resend", "acme", "owned"}, ExitError,
			"Error: Only owners make, demote or remove owners; your role is admin. Ask one of acme's owners.\n",
			[]string{"POST /api/orgs/acme/invitations/owned/resend"}},
		{[]string{"invitations:resend", "quiet", "x"}, ExitError, "You may not change invitation x of quiet. Ask one of quiet's owners.",
			[]string{"POST /api/orgs/quiet/invitations/x/resend"}},
		{[]string{"invitations:resend", "acme", ".."}, ExitError, `".." is not an invitation id: stepup invitations acme lists them`, nil},
		{[]string{"invitations:resend", "strict", "inv_1", "--no-interaction"}, ExitStepUp, "stepup login --method mfa",
			[]string{"POST /api/orgs/strict/invitations/inv_1/resend"}},

		{[]string{"invitations:revoke", "acme", "inv_1"}, 0, "Revoked invitation inv_1 of acme; its link no longer works.\n",
			[]string{"DELETE /api/orgs/acme/invitations/inv_1"}},
		// ID goes to the server as typed, escaped.
		{[]string{"invitations:revoke", "acme", "a b/c"}, ExitError, "acme has no open invitation a b/c",
			[]string{"DELETE /api/orgs/acme/invitations/a%20b%2Fc", "GET /api/orgs/acme"}},
		{[]string{"invitations:revoke", "beta", "inv_1"}, ExitError,
			"Only the organization's owners and admins can do this; your role is member. Ask one of beta's owners.",
			[]string{"DELETE /api/orgs/beta/invitations/inv_1"}},
		{[]string{"invitations:revoke", "acme", ""}, ExitError, `"" is not an invitation id`, nil},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := e.run(c.args...)
			got := r.stdout
			if c.code != 0 {
				got = r.stderr
			}
			if r.code != c.code || !strings.Contains(got, c.out) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s\nwant %q", r.code, c.code, r.stdout, r.stderr, c.out)
			}
			if c.code == 0 && r.stderr != "" {
				t.Errorf("stderr: %s", r.stderr)
			}
			if calls, _ := f.apiCalls(); fmt.Sprint(calls) != fmt.Sprint(c.calls) {
				t.Errorf("requests %q, want %q", calls, c.calls)
			}
		})
	}
}

func TestInvitationsListFake(t *testing.T) {
	f := newInvitationAPI(t)
	e := f.env()
	r := e.mustRun("invitations", "acme")
	if calls, _ := f.apiCalls(); fmt.Sprint(calls) != "[GET /api/orgs/acme/invitations]" {
		t.Errorf("requests %q", calls)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	// The expiry is local time; at noon UTC, the 10th or the 11th
	// wherever the test runs.
	wantRows := []string{`^ID\s+EMAIL\s+ROLE\s+INVITED BY\s+EXPIRES$`,
		`^inv_1\s+erin@example\.com\s+member\s+u_me\s+2026-12-1[01] \d\d:\d\d:\d\d$`,
		`^-dash\s+dash@example\.com\s+admin\s+u_me\s+2026-12-1[01] `,
		`^owned\s+olga@example\.com\s+owner\s+u_me\s`,
		`^bounce\s+gone@example\.com\s+member\s`, `^-new\s+bounce@example\.com\s`, `^old\s+bounce@example\.com\s`}
	if len(lines) != len(wantRows) {
		t.Fatalf("invitations printed %d lines, want %d:\n%s", len(lines), len(wantRows), r.stdout)
	}
	for i, row := range wantRows {
		if !regexp.MustCompile(row).MatchString(lines[i]) {
			t.Errorf("line %d is %q, want %s", i, lines[i], row)
		}
	}

	// --json has every invitation with every field the server gave.
	r = e.mustRun("invitations", "acme", "--json")
	var out struct {
		Invitations []map[string]any `json:"invitations"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--json is not JSON: %v\n%s", err, r.stdout)
	}
	if len(out.Invitations) != 6 || out.Invitations[0]["extra"] != "kept" || out.Invitations[0]["invited_by"] != "u_me" || out.Invitations[5]["id"] != "old" {
		t.Errorf("--json:\n%s", r.stdout)
	}
	if r := e.mustRun("invitations", "empty", "--json"); strings.TrimSpace(r.stdout) != `{
  "invitations": []
}` {
		t.Errorf("--json of none: %s", r.stdout)
	}
}

func TestInviteRoleCompletion(t *testing.T) {
	e := &cliEnv{t: t, issuer: "http://127.0.0.1:1", dir: t.TempDir()}
	for typed, want := range map[string]string{"": "owner\nadmin\nmember\n", "M": "member\n", "x": ""} {
		r := e.mustRun("__complete", "org:invite", "acme", "erin@example.com", "--role", typed)
		if !strings.HasPrefix(r.stdout, want+":4\n") {
			t.Errorf("completing --role %q: %q, want %q then :4 (no files)", typed, r.stdout, want)
		}
	}
	if r := e.mustRun("__complete", "org:invite", "--role=a"); !strings.HasPrefix(r.stdout, "admin\n:4\n") {
		t.Errorf("completing --role=a: %q", r.stdout)
	}
	// Organizations, addresses and ids are not files.
	for _, args := range [][]string{{"org:invite", ""}, {"org:invite", "acme", ""}, {"invitations", ""}, {"invitations:resend", "acme", ""}, {"invitations:revoke", "acme", ""}} {
		if r := e.mustRun(append([]string{"__complete"}, args...)...); !strings.HasPrefix(r.stdout, ":4\n") {
			t.Errorf("completing %q: %q", args, r.stdout)
		}
	}
}

// mailbox is the real server's mail relay in tests: it keeps the links
// it was given to send, per address, and refuses the addresses in fail.
type mailbox struct {
	mu    sync.Mutex
	links map[string][]string
	fail  map[string]bool
}

var invitationLink = regexp.MustCompile(`https?://\S+/invite/stpi_[A-Za-z0-9_-]{43}`)

func (m *mailbox) Send(_ context.Context, _ string, to []string, msg []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail[to[0]] {
		return errors.New("the relay refused the recipient")
	}
	_, body, _ := strings.Cut(string(msg), "\r\n\r\n")
	text, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
	if err != nil {
		return err
	}
	link := invitationLink.FindString(string(text))
	if link == "" {
		return fmt.Errorf("no invitation link in %q", text)
	}
	m.links[to[0]] = append(m.links[to[0]], link)
	return nil
}

func (m *mailbox) setFail(addr string, fail bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[addr] = fail
}

// sent is every link mailed to addr so far.
func (m *mailbox) sent(addr string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.links[addr])
}

// linkStatus is what opening an invitation link answers: 200 while it
// works, 404 once it does not.
func linkStatus(t *testing.T, link string) int {
	t.Helper()
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// newInviteEnv is newOrgEnv's people and organizations with a mail relay
// the test sees: alice owns acme and is an admin of gamma and a member of
// beta; bob owns bobs alone.
func newInviteEnv(t *testing.T, mail *mailbox) *cliEnv {
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
		Mailer: mail,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return &cliEnv{t: t, issuer: issuer, dir: t.TempDir()}
}

// The invitation commands against the real server, whose mail the test
// reads: an invitation whose email failed is resent with the command the
// CLI printed, a resend replaces the link, a revoke ends it, and every
// refusal is said in words alice can act on.
func TestInvitationCommands(t *testing.T) {
	mail := &mailbox{links: map[string][]string{}, fail: map[string]bool{"erin@example.com": true}}
	e := newInviteEnv(t, mail)
	e.mustRun("login")

	expect := func(args []string, code int, want ...string) result {
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
		return r
	}

	expect([]string{"invitations", "acme"}, 0, `^No open invitations\.\n$`)

	// The relay refuses erin's mail: the invitation exists, and the CLI
	// says how to send it.
	r := expect([]string{"org:invite", "acme", "erin@example.com"}, ExitError,
		`Error: The invitation of erin@example\.com to acme was made \(id \S+\), but its email could not be sent\. Send it later with\n  stepup invitations:resend acme (-- )?\S+\n\(rather than inviting again`)
	m := regexp.MustCompile(`\n  stepup (invitations:resend acme (?:-- )?(\S+))\n`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no resend command in %q", r.stderr)
	}
	resend, id := strings.Fields(m[1]), m[2]
	expect([]string{"invitations"}, ExitError, `accepts 1 arg`)
	expect([]string{"invitations", "acme"}, 0, `^ID\s+EMAIL\s+ROLE\s+INVITED BY\s+EXPIRES\n`,
		`(?m)^`+regexp.QuoteMeta(id)+`\s+erin@example\.com\s+member\s+u_alice\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`)
	if n := len(mail.sent("erin@example.com")); n != 0 {
		t.Fatalf("%d links reached erin", n)
	}
	// Still failing: the new link was made, the earlier one is gone.
	expect(resend, ExitError, `Error: Invitation `+regexp.QuoteMeta(id)+` of acme has a new link, but its email could not be sent, and the link of the earlier email no longer works\. Try again later:\n  stepup `+regexp.QuoteMeta(m[1])+`\n$`)

	// The command the CLI printed, once the relay takes the mail.
	mail.setFail("erin@example.com", false)
	// A week from now, as the email says it (the day may turn meanwhile).
	inAWeek := time.Now().UTC().Add(7 * 24 * time.Hour)
	week := "(?:" + inAWeek.Format("2 January 2006") + "|" + inAWeek.Add(time.Minute).Format("2 January 2006") + ")"
	expect(resend, 0, `^Sent invitation `+regexp.QuoteMeta(id)+` of acme to erin@example\.com again; the earlier link no longer works, the new one works once, until `+week+`\.\n$`)
	links := mail.sent("erin@example.com")
	if len(links) != 1 || linkStatus(t, links[0]) != http.StatusOK {
		t.Fatalf("erin's links %q", links)
	}
	// A second resend: a new link, and the one before stops working.
	expect(resend, 0, `^Sent invitation `)
	links = mail.sent("erin@example.com")
	if len(links) != 2 || links[0] == links[1] {
		t.Fatalf("after resending, erin's links %q", links)
	}
	if linkStatus(t, links[0]) != http.StatusNotFound || linkStatus(t, links[1]) != http.StatusOK {
		t.Errorf("after resending, the old link answers %d and the new %d", linkStatus(t, links[0]), linkStatus(t, links[1]))
	}

	// An invitation that was mailed at once; the date is the one in the
	// email.
	expect([]string{"org:invite", "acme", "frank@example.com", "--role", "admin"}, 0,
		`^Invited frank@example\.com to acme as an admin; the link in the email works once, until `+week+`\.\n$`)
	if links := mail.sent("frank@example.com"); len(links) != 1 || linkStatus(t, links[0]) != http.StatusOK {
		t.Errorf("frank's links %q", links)
	}
	r = expect([]string{"invitations", "acme", "--json"}, 0, `"email": "frank@example\.com"`)
	var list struct {
		Invitations []map[string]any `json:"invitations"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Invitations) != 2 {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	frank := list.Invitations[1]
	for _, k := range []string{"id", "email", "role", "invited_by", "created", "expires"} {
		if frank[k] == nil || frank[k] == "" {
			t.Errorf("--json lacks %s: %v", k, frank)
		}
	}
	if frank["role"] != "admin" || frank["invited_by"] != "u_alice" {
		t.Errorf("frank's invitation: %v", frank)
	}
	frankID := frank["id"].(string)

	// Revoked: the link stops working, the list drops it, and a second
	// revoke or a resend says it is not open.
	expect([]string{"invitations:revoke", "acme", "--", frankID}, 0, `^Revoked invitation `+regexp.QuoteMeta(frankID)+` of acme; its link no longer works\.\n$`)
	if s := linkStatus(t, mail.sent("frank@example.com")[0]); s != http.StatusNotFound {
		t.Errorf("the revoked link answers %d", s)
	}
	if r := e.mustRun("invitations", "acme"); strings.Contains(r.stdout, "frank") || !strings.Contains(r.stdout, "erin") {
		t.Errorf("after revoking:\n%s", r.stdout)
	}
	notOpen := `acme has no open invitation ` + regexp.QuoteMeta(frankID) + `: it may have been accepted, revoked or have expired \(stepup invitations acme lists the open ones\)\.`
	expect([]string{"invitations:revoke", "acme", "--", frankID}, ExitError, notOpen)
	expect([]string{"invitations:resend", "acme", "--", frankID}, ExitError, notOpen)

	// Refusals.
	expect([]string{"org:invite", "acme", "Erin <erin@example.com>"}, ExitError, `"Erin <erin@example\.com>" is not an email address: give a plain address like erin@example\.com\.`)
	expect([]string{"org:invite", "acme", "erin"}, ExitError, `"erin" is not an email address`)
	expect([]string{"org:invite", "acme", "erin@example.com", "--role", "boss"}, ExitError, `--role "boss" is not a role`)
	expect([]string{"org:invite", "gamma", "olga@example.com", "--role", "owner"}, ExitError,
		`Error: Only owners make, demote or remove owners; your role is admin\. Ask one of gamma's owners to send the invitation\.\n$`)
	expect([]string{"org:invite", "beta", "erin@example.com"}, ExitError,
		`Error: Only the organization's owners and admins manage its members; your role is member\. Ask one of beta's owners or admins to send the invitation\.\n$`)
	expect([]string{"invitations", "beta"}, ExitError, `Only the organization's owners and admins can do this; your role is member\.`)
	expect([]string{"invitations:revoke", "beta", "x"}, ExitError, `Only the organization's owners and admins can do this; your role is member\. Ask one of beta's owners\.`)
	// Another organization's invitation is not gamma's.
	expect([]string{"invitations:resend", "gamma", "--", id}, ExitError, `gamma has no open invitation `+regexp.QuoteMeta(id)+`:`)
	for _, org := range []string{"bobs", "nope"} {
		expect([]string{"org:invite", org, "erin@example.com"}, ExitError, `No organization `+org+` that you can see\.`)
		expect([]string{"invitations", org}, ExitError, `No organization `+org+` that you can see\.`)
		expect([]string{"invitations:revoke", org, "--", id}, ExitError, `No organization `+org+` that you can see\.`)
	}
	if n := len(mail.sent("olga@example.com")); n != 0 {
		t.Errorf("a refused invitation sent %d links", n)
	}
	// erin's invitation is untouched by all that.
	if links := mail.sent("erin@example.com"); linkStatus(t, links[len(links)-1]) != http.StatusOK {
		t.Errorf("erin's link stopped working")
	}
}

// With the server's default mail (to its log), invitations work the same
// way: invite, resend, revoke.
func TestInvitationCommandsLogMailer(t *testing.T) {
	e := newOrgEnv(t)
	e.mustRun("login")
	r := e.mustRun("org:invite", "acme", "erin@example.com", "--role", "owner")
	if !regexp.MustCompile(`^Invited erin@example\.com to acme as an owner; the link in the email works once, until \d{1,2} [A-Z][a-z]+ \d{4}\.\n$`).MatchString(r.stdout) {
		t.Errorf("org:invite: %q", r.stdout)
	}
	r = e.mustRun("invitations", "acme", "--json")
	var list struct{ Invitations []invitation }
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Invitations) != 1 {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	id := list.Invitations[0].ID
	if r := e.mustRun("invitations:resend", "acme", "--", id); !strings.HasPrefix(r.stdout, "Sent invitation "+id+" of acme to erin@example.com again;") {
		t.Errorf("resend: %q", r.stdout)
	}
	e.mustRun("invitations:revoke", "acme", "--", id)
	if r := e.mustRun("invitations", "acme"); r.stdout != "No open invitations.\n" {
		t.Errorf("after revoking: %q", r.stdout)
	}
}

// An organization that requires MFA: without a person at the terminal,
// an invitation says what to run and exits 3.
func TestInvitationStepUp(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	for _, args := range [][]string{{"org:invite", "acme", "erin@example.com"}, {"invitations", "acme"}} {
		r := e.run(append(args, "--no-interaction")...)
		if r.code != ExitStepUp || !strings.Contains(r.stderr, "  stepup login --method mfa\n") {
			t.Errorf("%v: exit %d, want %d\nstderr: %s", args, r.code, ExitStepUp, r.stderr)
		}
	}
}

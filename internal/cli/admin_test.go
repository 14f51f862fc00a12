package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testserver"
)

// newAdminEnv runs a real server with five people, alice its only
// instance administrator, and returns alice's machine and bob's.
func newAdminEnv(t *testing.T) (alice, bob *cliEnv) {
	t.Helper()
	var users []authz.User
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		users = append(users, authz.User{ID: "u_" + name, Username: name, Email: name + "@example.com",
			PasswordHash: aliceHash(), EmailVerified: true})
	}
	users[3].Email = "" // dave signs in with a password but has no address
	issuer := testserver.Start(t, authz.Config{
		Clients: []authz.Client{{
			ID: DefaultClientID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none",
		}},
		Users:  users,
		Admins: []string{"u_alice"},
	})
	alice = &cliEnv{t: t, issuer: issuer, dir: t.TempDir()}
	bob = &cliEnv{t: t, issuer: issuer, dir: t.TempDir()}
	bob.open = browseAs(bob, "bob", alicePassword)
	return alice, bob
}

// browseAs is cliEnv.browse for another person than alice: the login
// page, the password form, and the redirects back to the CLI.
func browseAs(e *cliEnv, username, password string) func(context.Context, string) error {
	return func(ctx context.Context, authURL string) error {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		resp, err := c.Get(authURL)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		form := url.Values{}
		for _, m := range hiddenInput.FindAllStringSubmatch(string(body), -1) {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
		if !strings.HasPrefix(resp.Request.URL.Path, "/login") || form.Get("csrf_token") == "" {
			return fmt.Errorf("expected the login form, got %s: %s", resp.Request.URL, body)
		}
		form.Set("username", username)
		form.Set("password", password)
		resp, err = c.PostForm(e.issuer+"/login", form)
		if err != nil {
			return err
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Request.URL.Path != "/callback" || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("the browser ended at %s (%d): %s", resp.Request.URL, resp.StatusCode, body)
		}
		return nil
	}
}

// adminPages makes admin:users ask for n people at a time during a test.
func adminPages(t *testing.T, n int) {
	old := adminPageSize
	adminPageSize = n
	t.Cleanup(func() { adminPageSize = old })
}

// expectRun runs stepup and checks its exit code and that what it said
// (stdout on success, stderr on failure) matches every pattern.
func expectRun(t *testing.T, e *cliEnv, args []string, code int, want ...string) result {
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

// TestAdminCommands: against the real server, alice lists everyone page
// by page, disables bob (whose token then stops working) and enables him
// again; bob, who is no administrator, is told so; the refusals are said
// in words a person can act on.
func TestAdminCommands(t *testing.T) {
	alice, bob := newAdminEnv(t)
	alice.mustRun("login")
	bob.mustRun("login")
	adminPages(t, 2) // five people: three pages

	const when = `\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`
	r := expectRun(t, alice, []string{"admin:users"}, 0,
		`^ID\s+USERNAME\s+EMAIL\s+DISABLED\s+CREATED\n`,
		`(?m)^u_alice\s+alice\s+alice@example\.com\s+no\s+`+when+`$`,
		`(?m)^u_dave\s+dave\s+-\s+no\s+`+when+`$`,
		`(?m)^u_erin\s+erin\s+erin@example\.com\s+no\s+`+when+`$`)
	if rows := strings.Count(r.stdout, "\n"); rows != 6 || r.stderr != "" {
		t.Errorf("admin:users printed %d lines (want a header and 5 people), stderr %q:\n%s", rows, r.stderr, r.stdout)
	}
	if strings.Index(r.stdout, "u_bob") > strings.Index(r.stdout, "u_carol") {
		t.Errorf("admin:users is not in id order:\n%s", r.stdout)
	}

	// --limit stops, and says how to go on; that command shows the rest.
	r = expectRun(t, alice, []string{"admin:users", "--limit", "3"}, 0, `(?m)^u_alice\s`, `(?m)^u_bob\s`, `(?m)^u_carol\s`)
	if strings.Contains(r.stdout, "u_dave") || r.stderr != "There may be more people: stepup admin:users --limit 3 --after u_carol\n" {
		t.Errorf("admin:users --limit 3:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	r = expectRun(t, alice, []string{"admin:users", "--limit", "3", "--after", "u_carol"}, 0, `(?m)^u_dave\s`, `(?m)^u_erin\s`)
	if strings.Contains(r.stdout, "u_carol") || r.stderr != "" {
		t.Errorf("admin:users --after u_carol:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	expectRun(t, alice, []string{"admin:users", "--after", "u_erin"}, 0, `^No people after u_erin\.\n$`)
	expectRun(t, alice, []string{"admin:users", "--limit", "0"}, ExitError, `--limit 0: give how many people to list, 1 or more`)

	r = expectRun(t, alice, []string{"admin:users", "--json"}, 0)
	var list struct {
		Users []map[string]any `json:"users"`
		Next  *string          `json:"next"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Users) != 5 || list.Next != nil ||
		list.Users[1]["username"] != "bob" || list.Users[1]["disabled"] != false || list.Users[1]["created"] == "" {
		t.Errorf("admin:users --json (%v):\n%s", err, r.stdout)
	}
	r = expectRun(t, alice, []string{"admin:users", "--json", "--limit", "2"}, 0, `"next": "u_bob"`)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Users) != 2 {
		t.Errorf("admin:users --json --limit 2 (%v):\n%s", err, r.stdout)
	}

	// Disabling bob ends his token at once; he is listed as disabled.
	expectRun(t, bob, []string{"api", "GET", "/api/me"}, 0, `"username":"bob"`)
	expectRun(t, alice, []string{"admin:disable", "bob"}, 0,
		`^Disabled bob \(u_bob\): their sessions, refresh tokens, API tokens and access tokens no longer work, and they cannot log in\.\n$`)
	expectRun(t, alice, []string{"admin:users"}, 0, `(?m)^u_bob\s+bob\s+bob@example\.com\s+yes\s`, `(?m)^u_carol\s+carol\s+\S+\s+no\s`)
	if r := bob.run("api", "GET", "/api/me"); r.code != ExitError || !strings.Contains(r.stdout, "The account was disabled.") {
		t.Errorf("bob's token after admin:disable: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// By id or by username, enabled again: bob logs in and is let in.
	expectRun(t, alice, []string{"admin:enable", "u_bob"}, 0, `^Enabled bob \(u_bob\): they can log in again\.\n$`)
	expectRun(t, alice, []string{"admin:users", "--limit", "2"}, 0, `(?m)^u_bob\s+bob\s+bob@example\.com\s+no\s`)
	bob.mustRun("login", "-f")
	expectRun(t, bob, []string{"api", "GET", "/api/me"}, 0, `"username":"bob"`)

	// Refusals.
	for _, self := range []string{"alice", "ALICE", "u_alice"} {
		expectRun(t, alice, []string{"admin:disable", self}, ExitError, `^Error: You cannot disable your own account: another administrator can\.\n$`)
	}
	expectRun(t, alice, []string{"admin:disable", "ghost"}, ExitError, `^Error: There is no person ghost on this instance \(stepup admin:users lists everyone\)\.\n$`)
	expectRun(t, alice, []string{"admin:enable", ".."}, ExitError, `"\.\." is not a user: give a user id or a username \(see stepup admin:enable --help\)`)
	expectRun(t, alice, []string{"admin:disable"}, ExitError, `accepts 1 arg\(s\)`)
	notAdmin := `^Error: You \(bob\) are not an administrator of ` + regexp.QuoteMeta(bob.issuer) + `, so you cannot %s\. Its administrators are the people listed under admins in the server's config: ask one of them\.\n$`
	expectRun(t, bob, []string{"admin:users"}, ExitError, fmt.Sprintf(notAdmin, "list the instance's people"))
	expectRun(t, bob, []string{"admin:disable", "carol"}, ExitError, fmt.Sprintf(notAdmin, "disable accounts"))
	expectRun(t, bob, []string{"admin:enable", "carol"}, ExitError, fmt.Sprintf(notAdmin, "enable accounts"))
	expectRun(t, alice, []string{"admin:users"}, 0, `(?m)^u_carol\s+carol\s+\S+\s+no\s`)
}

// adminAPI is a fake admin API that records requests: people a … g in
// pages as the client asks for them; "loop" as an after never ends;
// PATCH of "strict" demands MFA, of "scoped" lacks a scope.
type adminAPI struct {
	ts   *httptest.Server
	mu   sync.Mutex
	reqs []string
}

func newAdminAPI(t *testing.T) *adminAPI {
	f := &adminAPI{}
	people := []string{"a", "b", "c", "d", "e", "f", "g"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]any{"issuer": f.ts.URL, "authorization_endpoint": f.ts.URL + "/oauth2/authorize",
			"token_endpoint": f.ts.URL + "/oauth2/token", "authorization_response_iss_parameter_supported": true})
	})
	mux.HandleFunc("GET /api/me", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]any{"id": "u_me", "username": "Me"})
	})
	mux.HandleFunc("GET /api/admin/users", func(w http.ResponseWriter, r *http.Request) {
		after := r.URL.Query().Get("after")
		if after == "loop" {
			writeTestJSON(w, 200, map[string]any{"users": []any{}, "next": "loop"})
			return
		}
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		start := 0
		for i, p := range people {
			if "u_"+p == after {
				start = i + 1
			}
		}
		end := min(start+limit, len(people))
		page := []map[string]any{}
		for _, p := range people[start:end] {
			page = append(page, map[string]any{"id": "u_" + p, "username": p, "email": "", "disabled": p == "c", "created": "2030-01-02T03:04:05Z", "extra": 1})
		}
		answer := map[string]any{"users": page}
		if end-start == limit {
			answer["next"] = "u_" + people[end-1]
		}
		writeTestJSON(w, 200, answer)
	})
	mux.HandleFunc("PATCH /api/admin/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Disabled bool }
		_ = json.NewDecoder(r.Body).Decode(&in)
		switch user := r.PathValue("user"); user {
		case "strict":
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_user_authentication", amr="mfa"`)
			writeTestJSON(w, 401, map[string]any{"error": "insufficient_user_authentication", "error_description": "MFA required", "amr": []string{"mfa"}})
		case "scoped":
			refuse(w, 403, "insufficient_scope", "This call needs a token with the scope manage.")
		case "liar":
			writeTestJSON(w, 200, map[string]any{"id": "u_liar", "username": "liar", "disabled": !in.Disabled})
		default:
			writeTestJSON(w, 200, map[string]any{"id": "u_x", "username": user, "disabled": in.Disabled})
		}
	})
	f.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if r.URL.Path != "/.well-known/openid-configuration" {
			f.mu.Lock()
			f.reqs = append(f.reqs, strings.TrimSpace(r.Method+" "+r.RequestURI+" "+string(body)))
			f.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.ts.Close)
	return f
}

func (f *adminAPI) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.reqs
	f.reqs = nil
	return out
}

// TestAdminCommandsFake pins what goes over the wire: the pages asked for
// (fewer when --limit is near), USER escaped in the path, the body, and
// what happens on a step-up challenge, another 403 and a list without end.
func TestAdminCommandsFake(t *testing.T) {
	f := newAdminAPI(t)
	e := &cliEnv{t: t, issuer: f.ts.URL, dir: t.TempDir(), token: "given"}
	adminPages(t, 3)
	cases := []struct {
		args  []string
		code  int
		out   string // in stdout on success, stderr otherwise
		calls []string
	}{
		{[]string{"admin:users"}, 0, "u_g", []string{
			"GET /api/admin/users?limit=3", "GET /api/admin/users?after=u_c&limit=3", "GET /api/admin/users?after=u_f&limit=3"}},
		{[]string{"admin:users", "--limit", "4"}, 0, "u_d", []string{
			"GET /api/admin/users?limit=3", "GET /api/admin/users?after=u_c&limit=1"}},
		{[]string{"admin:users", "--limit", "2", "--after", "u_e"}, 0, "u_g", []string{"GET /api/admin/users?after=u_e&limit=2"}},
		{[]string{"admin:users", "--json", "--limit", "1"}, 0, `"extra": 1`, []string{"GET /api/admin/users?limit=1"}},
		{[]string{"admin:users", "--after", "loop"}, ExitError, `the server's list of people does not end: it gave next="loop" twice`, []string{
			"GET /api/admin/users?after=loop&limit=3", "GET /api/admin/users?after=loop&limit=3"}},
		// Disabling asks who one is first: never oneself, by id or username.
		{[]string{"admin:disable", "a b/c?d"}, 0, "Disabled a b/c?d (u_x)", []string{"GET /api/me", `PATCH /api/admin/users/a%20b%2Fc%3Fd {"disabled":true}`}},
		{[]string{"admin:disable", "me"}, ExitError, "Error: You cannot disable your own account: another administrator can.\n", []string{"GET /api/me"}},
		{[]string{"admin:disable", "u_me"}, ExitError, "Error: You cannot disable your own account", []string{"GET /api/me"}},
		{[]string{"admin:enable", "me"}, 0, "Enabled me (u_x)", []string{`PATCH /api/admin/users/me {"disabled":false}`}},
		{[]string{"admin:enable", "bob"}, 0, "Enabled bob (u_x): they can log in again.", []string{`PATCH /api/admin/users/bob {"disabled":false}`}},
		{[]string{"admin:disable", "strict", "--no-interaction"}, ExitStepUp, "  stepup login --method mfa\n", []string{"GET /api/me", `PATCH /api/admin/users/strict {"disabled":true}`}},
		{[]string{"admin:disable", "scoped"}, ExitError, "Error: This call needs a token with the scope manage.\n", []string{"GET /api/me", `PATCH /api/admin/users/scoped {"disabled":true}`}},
		{[]string{"admin:enable", "liar"}, ExitError, "the server answered that liar (u_liar) is disabled", []string{`PATCH /api/admin/users/liar {"disabled":false}`}},
		{[]string{"admin:disable", " "}, ExitError, `" " is not a user`, nil},
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
			if calls := f.calls(); fmt.Sprint(calls) != fmt.Sprint(c.calls) {
				t.Errorf("requests %q, want %q", calls, c.calls)
			}
		})
	}
	// The table: a disabled person says yes, an empty email is "-".
	r := e.mustRun("admin:users", "--limit", "3")
	if !regexp.MustCompile(`(?m)^u_c\s+c\s+-\s+yes\s+\d{4}-`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^u_a\s+a\s+-\s+no\s`).MatchString(r.stdout) {
		t.Errorf("admin:users table:\n%s", r.stdout)
	}
}

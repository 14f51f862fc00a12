package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// memberAPI is a fake server with the membership API's contract, which
// records every request. "acme": me (u_me) and dana own it, bob, carol, eve
// and frank are members; its list comes in pages of two. "solo": me alone
// owns it. "strict" demands MFA of every call; "loop" lists without end.
// Anything else does not exist.
type memberAPI struct {
	t  *testing.T
	ts *httptest.Server

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, uri, auth, body string
}

// String is what tests compare: the method, the request URI as sent (so
// path escaping shows) and the body.
func (r recorded) String() string {
	if r.body == "" {
		return r.method + " " + r.uri
	}
	return r.method + " " + r.uri + " " + r.body
}

var acmeMembers = []map[string]any{
	{"id": "u_me", "username": "me", "email": "me@example.com", "role": "owner", "mfa_enabled": true, "sso_providers": []string{}, "last_reminded_at": nil, "extra": "kept"},
	{"id": "u_dana", "username": "dana", "email": "dana@example.com", "role": "owner", "mfa_enabled": true, "sso_providers": []string{}, "last_reminded_at": nil},
	{"id": "u_bob", "username": "bob", "email": "bob@example.com", "role": "member", "mfa_enabled": false, "sso_providers": []string{}, "last_reminded_at": nil},
	{"id": "u_carol", "username": "carol", "email": "", "role": "admin", "mfa_enabled": true, "sso_providers": []string{}, "last_reminded_at": nil},
	{"id": "u_eve", "username": "eve", "email": "eve@example.com", "role": "member", "mfa_enabled": false, "sso_providers": []string{}, "last_reminded_at": "2030-01-02T03:04:05Z"},
	{"id": "u_frank", "username": "frank", "email": "frank@example.com", "role": "member", "mfa_enabled": false, "sso_providers": []string{}, "last_reminded_at": nil},
}

func newMemberAPI(t *testing.T) *memberAPI {
	f := &memberAPI{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]any{
			"issuer": f.ts.URL, "authorization_endpoint": f.ts.URL + "/oauth2/authorize",
			"token_endpoint": f.ts.URL + "/oauth2/token", "authorization_response_iss_parameter_supported": true,
		})
	})
	mux.HandleFunc("GET /api/me", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]any{"id": "u_me", "username": "me"})
	})
	mux.HandleFunc("POST /api/orgs", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ ID, Name string }
		json.NewDecoder(r.Body).Decode(&in)
		switch {
		case in.ID == "acme":
			refuse(w, 409, "org_exists", "")
		case !regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`).MatchString(in.ID):
			refuse(w, 400, "invalid_request", "")
		case in.ID == "long-name":
			refuse(w, 400, "invalid_request", "The name is too long: at most 100 characters.")
		default:
			writeTestJSON(w, 201, map[string]any{"id": in.ID, "name": in.Name, "mfa_required": false, "sso_provider": ""})
		}
	})
	mux.HandleFunc("GET /api/orgs/{org}", func(w http.ResponseWriter, r *http.Request) {
		switch org := r.PathValue("org"); org {
		case "acme", "solo":
			writeTestJSON(w, 200, map[string]any{"id": org, "name": strings.ToUpper(org), "mfa_required": false, "sso_provider": ""})
		default:
			refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
		}
	})
	mux.HandleFunc("GET /api/orgs/{org}/members", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("org") {
		case "loop":
			writeTestJSON(w, 200, map[string]any{"members": []any{}, "next": "x"})
			return
		case "acme":
		default:
			refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
			return
		}
		var list []map[string]any
		for _, m := range acmeMembers {
			if r.URL.Query().Get("mfa_enabled") != "false" || m["mfa_enabled"] == false {
				list = append(list, m)
			}
		}
		start := 0
		if after := r.URL.Query().Get("after"); after != "" {
			start = -1
			for i, m := range list {
				if m["id"] == after {
					start = i + 1
				}
			}
			if start < 0 {
				refuse(w, 400, "invalid_request", "after is not a member")
				return
			}
		}
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil {
			limit = 100
		}
		end := min(start+limit, len(list))
		page := map[string]any{"members": list[start:end]}
		if end < len(list) {
			page["next"] = list[end-1]["id"]
		}
		writeTestJSON(w, 200, page)
	})
	member := func(w http.ResponseWriter, r *http.Request) (org, user string, ok bool) {
		org, user = r.PathValue("org"), r.PathValue("user")
		switch {
		case org != "acme" && org != "solo":
			refuse(w, 404, "not_found", "There is no organization with that id that you can see.")
		case org == "solo" && user == "u_me", org == "acme" && user == "dana":
			refuse(w, 409, "last_owner", "An organization keeps at least one owner.")
		case org == "acme" && strings.HasPrefix(user, "ghost"):
			refuse(w, 404, "not_found", "Not a member.")
		default:
			return org, user, true
		}
		return "", "", false
	}
	mux.HandleFunc("PATCH /api/orgs/{org}/members/{user}", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Role string }
		json.NewDecoder(r.Body).Decode(&in)
		if _, user, ok := member(w, r); ok {
			switch {
			case user == "carol" && in.Role == "owner":
				refuse(w, 403, "access_denied", "Only owners can make someone an owner; your role is admin.")
			case user == "quiet":
				refuse(w, 403, "access_denied", "")
			default:
				writeTestJSON(w, 200, map[string]any{"id": "u_" + user, "username": user, "role": in.Role, "mfa_enabled": false})
			}
		}
	})
	mux.HandleFunc("DELETE /api/orgs/{org}/members/{user}", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := member(w, r); ok {
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

func refuse(w http.ResponseWriter, status int, code, description string) {
	writeTestJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// apiCalls returns the API requests since the last call (discovery left
// out, but counted in discoveries), and checks each carried the token.
func (f *memberAPI) apiCalls() (calls []string, discoveries int) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reqs {
		if r.uri == "/.well-known/openid-configuration" {
			discoveries++
			continue
		}
		if r.auth != "Bearer given" {
			f.t.Errorf("%s carried Authorization %q", r, r.auth)
		}
		calls = append(calls, r.String())
	}
	f.reqs = nil
	return calls, discoveries
}

func (f *memberAPI) env() *cliEnv {
	return &cliEnv{t: f.t, issuer: f.ts.URL, dir: f.t.TempDir(), token: "given"}
}

// pageSize makes the CLI ask for n members at a time during a test.
func pageSize(t *testing.T, n int) {
	old := memberPageSize
	memberPageSize = n
	t.Cleanup(func() { memberPageSize = old })
}

func TestOrgMembersPagesFake(t *testing.T) {
	f := newMemberAPI(t)
	e := f.env()
	pageSize(t, 2)

	r := e.mustRun("org:members", "acme")
	calls, discoveries := f.apiCalls()
	want := []string{"GET /api/orgs/acme/members?limit=2", "GET /api/orgs/acme/members?after=u_dana&limit=2", "GET /api/orgs/acme/members?after=u_carol&limit=2"}
	if fmt.Sprint(calls) != fmt.Sprint(want) || discoveries != 1 {
		t.Errorf("requests %q (%d discoveries), want %q and one discovery", calls, discoveries, want)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	wantRows := []string{`^ID\s+USERNAME\s+ROLE\s+MFA$`, `^u_me\s+me\s+owner\s+on$`, `^u_dana\s+dana\s+owner\s+on$`,
		`^u_bob\s+bob\s+member\s+off$`, `^u_carol\s+carol\s+admin\s+on$`, `^u_eve\s+eve\s+member\s+off$`, `^u_frank\s+frank\s+member\s+off$`}
	if len(lines) != len(wantRows) {
		t.Fatalf("org:members printed %d lines, want %d:\n%s", len(lines), len(wantRows), r.stdout)
	}
	for i, row := range wantRows {
		if !regexp.MustCompile(row).MatchString(lines[i]) {
			t.Errorf("line %d is %q, want %s", i, lines[i], row)
		}
	}

	r = e.mustRun("org:members", "acme", "--without-mfa")
	calls, _ = f.apiCalls()
	want = []string{"GET /api/orgs/acme/members?limit=2&mfa_enabled=false", "GET /api/orgs/acme/members?after=u_eve&limit=2&mfa_enabled=false"}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("--without-mfa requests %q, want %q", calls, want)
	}
	if !strings.Contains(r.stdout, "u_bob") || !strings.Contains(r.stdout, "u_frank") || strings.Contains(r.stdout, "u_me") {
		t.Errorf("org:members --without-mfa:\n%s", r.stdout)
	}

	// --json has every member of every page, with every field the
	// server gave.
	r = e.mustRun("org:members", "acme", "--json")
	var out struct {
		Members []map[string]any `json:"members"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--json is not JSON: %v\n%s", err, r.stdout)
	}
	if len(out.Members) != len(acmeMembers) || out.Members[0]["extra"] != "kept" || out.Members[5]["id"] != "u_frank" {
		t.Errorf("--json:\n%s", r.stdout)
	}
	f.apiCalls()

	// org:users pages too, and shows the ids org:remind takes.
	r = e.mustRun("org:users", "acme")
	for _, row := range []string{`(?m)^ID\s+USERNAME\s+EMAIL\s+ROLE\s+MFA\s+LAST REMINDED$`, `(?m)^u_carol\s+carol\s+-\s+admin\s+on\s+never$`, `(?m)^u_eve\s+eve\s+eve@example\.com\s+member\s+off\s+2030-`} {
		if !regexp.MustCompile(row).MatchString(r.stdout) {
			t.Errorf("org:users lacks %s:\n%s", row, r.stdout)
		}
	}
	if calls, _ := f.apiCalls(); len(calls) != 3 {
		t.Errorf("org:users made %q", calls)
	}

	r = e.run("org:members", "loop")
	if r.code != ExitError || !strings.Contains(r.stderr, "does not end") {
		t.Errorf("a list without end: exit %d: %s", r.code, r.stderr)
	}
	r = e.run("org:members", "nope")
	if r.code != ExitError || !strings.Contains(r.stderr, "No organization nope that you can see.") {
		t.Errorf("org:members nope: exit %d: %s", r.code, r.stderr)
	}
	// The step-up challenge without a person at the terminal: the login
	// command to run, and exit status 3.
	r = e.run("org:members", "strict", "--no-interaction")
	if r.code != ExitStepUp || !strings.Contains(r.stderr, "stepup login --method mfa") {
		t.Errorf("org:members strict: exit %d: %s", r.code, r.stderr)
	}
}

func TestOrgRoleRemoveLeaveFake(t *testing.T) {
	f := newMemberAPI(t)
	e := f.env()
	cases := []struct {
		args  []string
		code  int
		out   string // in stdout on success, stderr otherwise
		calls []string
	}{
		{[]string{"org:role", "acme", "bob", "admin"}, 0, "bob (u_bob) is now an admin of acme.\n",
			[]string{`PATCH /api/orgs/acme/members/bob {"role":"admin"}`}},
		{[]string{"org:role", "acme", "bob", "Owner"}, 0, "bob (u_bob) is now an owner of acme.\n",
			[]string{`PATCH /api/orgs/acme/members/bob {"role":"owner"}`}},
		// USER goes to the server as typed, escaped.
		{[]string{"org:role", "acme", "a b/c?d", "member"}, 0, "is now a member of acme.",
			[]string{`PATCH /api/orgs/acme/members/a%20b%2Fc%3Fd {"role":"member"}`}},
		{[]string{"org:role", "acme", "bob", "boss"}, ExitError, `"boss" is not a role: use owner, admin or member`, nil},
		{[]string{"org:role", "acme", "..", "admin"}, ExitError, `".." is not a user`, nil},
		{[]string{"org:role", "acme", "bob"}, ExitError, "accepts 3 arg(s)", nil},
		{[]string{"org:role", "acme", "dana", "member"}, ExitError,
			"acme must keep an owner: make someone else an owner first (stepup org:role acme USER owner), then change dana's role.",
			[]string{`PATCH /api/orgs/acme/members/dana {"role":"member"}`}},
		{[]string{"org:role", "acme", "carol", "owner"}, ExitError, "Error: Only owners can make someone an owner; your role is admin.\n",
			[]string{`PATCH /api/orgs/acme/members/carol {"role":"owner"}`}},
		{[]string{"org:role", "acme", "quiet", "admin"}, ExitError, "You may not change quiet's membership of acme; ask one of its owners.",
			[]string{`PATCH /api/orgs/acme/members/quiet {"role":"admin"}`}},
		// A 404 is told apart by asking for the organization.
		{[]string{"org:role", "acme", "ghost", "admin"}, ExitError, "ghost is not a member of acme (stepup org:members acme lists who is).",
			[]string{`PATCH /api/orgs/acme/members/ghost {"role":"admin"}`, "GET /api/orgs/acme"}},
		{[]string{"org:role", "nope", "bob", "admin"}, ExitError, "No organization nope that you can see.",
			[]string{`PATCH /api/orgs/nope/members/bob {"role":"admin"}`, "GET /api/orgs/nope"}},
		{[]string{"org:role", "strict", "bob", "admin", "--no-interaction"}, ExitStepUp, "stepup login --method mfa",
			[]string{`PATCH /api/orgs/strict/members/bob {"role":"admin"}`}},

		{[]string{"org:remove", "acme", "bob"}, 0, "Removed bob from acme.\n", []string{"DELETE /api/orgs/acme/members/bob"}},
		{[]string{"org:remove", "acme", "dana"}, ExitError,
			"acme must keep an owner: make someone else an owner first (stepup org:role acme USER owner), then remove dana.",
			[]string{"DELETE /api/orgs/acme/members/dana"}},
		{[]string{"org:remove", "acme", "ghost"}, ExitError, "ghost is not a member of acme",
			[]string{"DELETE /api/orgs/acme/members/ghost", "GET /api/orgs/acme"}},
		{[]string{"org:remove", "acme", ""}, ExitError, `"" is not a user`, nil},

		{[]string{"org:leave", "acme"}, 0, "You have left acme.\n", []string{"GET /api/me", "DELETE /api/orgs/acme/members/u_me"}},
		{[]string{"org:leave", "solo"}, ExitError,
			"solo must keep an owner and you are its last: make someone else an owner first (stepup org:role solo USER owner), then leave.",
			[]string{"GET /api/me", "DELETE /api/orgs/solo/members/u_me"}},
		{[]string{"org:leave", "nope"}, ExitError, "No organization nope that you are a member of.",
			[]string{"GET /api/me", "DELETE /api/orgs/nope/members/u_me"}},

		{[]string{"org:create", "acme-2", "--name", "ACME 2"}, 0, "Created acme-2; you are its owner.\nOrganization: ACME 2 (acme-2)\nMFA required: no\nSSO provider: none\n",
			[]string{`POST /api/orgs {"id":"acme-2","name":"ACME 2"}`}},
		{[]string{"org:create", "acme-3"}, 0, "Organization: acme-3 (acme-3)", []string{`POST /api/orgs {"id":"acme-3","name":"acme-3"}`}},
		{[]string{"org:create", "acme"}, ExitError, "There is already an organization acme: choose another id.",
			[]string{`POST /api/orgs {"id":"acme","name":"acme"}`}},
		{[]string{"org:create", "Acme_2"}, ExitError, `"Acme_2" is not a valid organization id: use 2 to 63 lower-case letters, digits and '-', starting with a letter or a digit.`,
			[]string{`POST /api/orgs {"id":"Acme_2","name":"Acme_2"}`}},
		{[]string{"org:create", "long-name", "--name", "L"}, ExitError, "The name is too long", []string{`POST /api/orgs {"id":"long-name","name":"L"}`}},
		{[]string{"org:create", "acme-4", "--name", " "}, ExitError, "--name is empty", nil},
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

func TestOrgRoleCompletion(t *testing.T) {
	e := &cliEnv{t: t, issuer: "http://127.0.0.1:1", dir: t.TempDir()}
	for typed, want := range map[string]string{"": "owner\nadmin\nmember\n", "ad": "admin\n", "x": ""} {
		r := e.mustRun("__complete", "org:role", "acme", "bob", typed)
		if !strings.HasPrefix(r.stdout, want+":4\n") {
			t.Errorf("completing %q: %q, want %q then :4 (no files)", typed, r.stdout, want)
		}
	}
	// The organization and the person are not files.
	if r := e.mustRun("__complete", "org:role", ""); !strings.HasPrefix(r.stdout, ":4\n") {
		t.Errorf("completing ORG: %q", r.stdout)
	}
}

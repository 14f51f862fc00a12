package load_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage/memory"
	"github.com/stepup-dev/stepup/internal/load"
	"github.com/stepup-dev/stepup/internal/testserver"
)

// TestSeedThenLoginAndMembers seeds 60 people and an organization of 20
// into a store, checks them with the directory's own reads, seeds again
// (nothing new, nothing broken), then serves that store and runs the
// login scenario as people drawn from the 60 and the members scenario as
// the organization's owner.
func TestSeedThenLoginAndMembers(t *testing.T) {
	ctx := context.Background()
	st := memory.New(memory.Config{})
	d := directory.New(st, nil)
	hash, err := authz.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	o := load.SeedOptions{Users: 60, PasswordHash: hash, Org: "bench", OrgSize: 20, Workers: 4}
	rep, err := load.Seed(ctx, d, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.NewUsers != 60 || rep.Members != 20 || rep.NewMembers != 20 || rep.Owner != "bench0000000" {
		t.Errorf("first seeding: %+v", rep)
	}
	checkSeeded(t, d, 60, "bench", 20, pw)

	rep, err = load.Seed(ctx, d, o)
	if err != nil || rep.NewUsers != 0 || rep.NewMembers != 0 || rep.Members != 20 {
		t.Errorf("second seeding: %+v, %v", rep, err)
	}
	checkSeeded(t, d, 60, "bench", 20, pw)
	// An organization of the same id owned by someone else is refused,
	// not mixed in.
	if err := d.CreateOrg(ctx, directory.Org{ID: "taken", Name: "Taken"}, load.SeedID(7)); err != nil {
		t.Fatal(err)
	}
	if _, err := load.Seed(ctx, d, load.SeedOptions{Users: 60, PasswordHash: hash, Org: "taken", OrgSize: 5}); err == nil {
		t.Error("seeding into an organization that another person owns: no error")
	}

	url := testserver.Start(t, authz.Config{
		Store: st,
		Clients: []authz.Client{{ID: "stepup-cli", Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "offline_access"}, TokenEndpointAuthMethod: "none"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	var mu sync.Mutex
	drawn := map[string]bool{}
	opts := load.Options{URL: url, Concurrency: 2, Duration: 700 * time.Millisecond, SkipBaseline: true,
		Scenarios: []string{load.Login, load.Members}, Username: rep.Owner, Password: pw, Org: "bench",
		LoginUsername: func() string {
			u := load.SeedUsername(int(time.Now().UnixNano() % 60))
			mu.Lock()
			drawn[u] = true
			mu.Unlock()
			return u
		}}
	run, err := load.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range opts.Scenarios {
		s, _ := run.Scenario(name)
		if s.OK == 0 || s.Failures() != 0 {
			t.Errorf("%s: %d ok of %d ops, counts %v, samples %v", name, s.OK, s.Ops, s.Counts, s.Samples)
		}
	}
	if len(drawn) < 2 {
		t.Errorf("the logins were as %v, want several people", drawn)
	}

	// The members scenario counts what the server refuses: a person
	// who is only a member gets 403 on every call.
	opts.Scenarios, opts.Username, opts.LoginUsername = []string{load.Members}, load.SeedUsername(load.SeedMembers(60, 20)[1]), nil
	run, err = load.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := run.Scenario(load.Members); s.Ops == 0 || s.Counts["4xx:403"] != s.Ops {
		t.Errorf("members as a plain member: %d ops, counts %v", s.Ops, s.Counts)
	}
}

// checkSeeded reads the seeded directory back through the calls the
// server makes: a login's lookup, the password, the members and roles.
func checkSeeded(t *testing.T, d *directory.Directory, users int, org string, size int, password string) {
	t.Helper()
	ctx := context.Background()
	for _, i := range []int{0, 1, users / 2, users - 1} {
		u, err := d.ByUsername(ctx, load.SeedUsername(i))
		if err != nil || u.ID != load.SeedID(i) || !authz.CheckPassword(u.PasswordHash, password) || !u.EmailVerified {
			t.Fatalf("person %d: %+v, %v", i, u, err)
		}
		if byEmail, err := d.ByEmail(ctx, load.SeedEmail(i)); err != nil || byEmail.ID != u.ID {
			t.Errorf("person %d by email: %v", i, err)
		}
	}
	if _, err := d.ByUsername(ctx, load.SeedUsername(users)); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("person %d exists: %v", users, err)
	}
	all, err := d.ListUsers(ctx, "", users+10)
	if err != nil || len(all) != users {
		t.Errorf("ListUsers: %d people, %v", len(all), err)
	}
	if n, err := d.MemberCount(ctx, org); err != nil || n != int64(size) {
		t.Fatalf("%s has %d members (%v), want %d", org, n, err, size)
	}
	page, err := d.Members(ctx, org, "", size+10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page {
		want := directory.RoleMember
		if m.User.ID == load.SeedID(0) {
			want = directory.RoleOwner
		}
		if m.Role != want {
			t.Errorf("%s is %s of %s, want %s", m.User.Username, m.Role, org, want)
		}
		ids = append(ids, m.User.ID)
	}
	for _, i := range load.SeedMembers(users, size) {
		if !slices.Contains(ids, load.SeedID(i)) {
			t.Errorf("person %d is not a member of %s", i, org)
		}
	}
}

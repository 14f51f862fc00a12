package directory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

var ctx = context.Background()

// backends are the stores the directory is tested on; redis_test.go adds
// real Redis, standalone and Cluster.
var backends = map[string]func(t *testing.T) storage.Records{
	"memory": func(*testing.T) storage.Records { return memory.New(memory.Config{}) },
}

func forEach(t *testing.T, fn func(t *testing.T, d *directory.Directory)) {
	for name, open := range backends {
		t.Run(name, func(t *testing.T) { fn(t, directory.New(open(t), nil)) })
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func user(id, username, email string) directory.User {
	return directory.User{ID: id, Username: username, Email: email}
}

func TestUsers(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		must(t, d.CreateUser(ctx, user("u1", "Alice", "Alice@Example.com")))
		for _, tc := range []struct {
			name string
			u    directory.User
			want error
		}{
			{"fail/same-id", user("u1", "other", "other@example.com"), directory.ErrIDTaken},
			{"fail/same-username-other-case", user("u2", "aLiCe", "a2@example.com"), directory.ErrUsernameTaken},
			{"fail/same-email-other-case", user("u2", "alice2", "alice@EXAMPLE.com"), directory.ErrEmailTaken},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := d.CreateUser(ctx, tc.u); !errors.Is(err, tc.want) {
					t.Fatalf("CreateUser: %v, want %v", err, tc.want)
				}
				// Nothing of it was written.
				if _, err := d.User(ctx, "u2"); !errors.Is(err, directory.ErrNotFound) {
					t.Errorf("u2 after a refused create: %v", err)
				}
			})
		}
		// alice2 was refused for her email: her username stays free.
		must(t, d.CreateUser(ctx, user("u3", "alice2", "")))

		for _, lookup := range []func() (*directory.User, error){
			func() (*directory.User, error) { return d.User(ctx, "u1") },
			func() (*directory.User, error) { return d.ByUsername(ctx, "ALICE") },
			func() (*directory.User, error) { return d.ByEmail(ctx, "alice@example.COM") },
		} {
			if u, err := lookup(); err != nil || u.ID != "u1" || u.Username != "Alice" || u.Created.IsZero() {
				t.Errorf("lookup: %+v, %v", u, err)
			}
		}
		if _, err := d.ByUsername(ctx, "nobody"); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("unknown username: %v", err)
		}
		got, err := d.Users(ctx, "u3", "nope", "u1")
		if err != nil || got[0].ID != "u3" || got[1] != nil || got[2].ID != "u1" {
			t.Errorf("Users: %v, %v", got, err)
		}

		// A new email is claimed and the old one freed, in one step.
		if _, err := d.UpdateUser(ctx, "u1", func(u *directory.User) error { u.Email = "alice@new.example"; return nil }); err != nil {
			t.Fatal(err)
		}
		if u, err := d.ByEmail(ctx, "alice@new.example"); err != nil || u.ID != "u1" {
			t.Errorf("new email: %v %v", u, err)
		}
		if _, err := d.ByEmail(ctx, "alice@example.com"); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("old email still claimed: %v", err)
		}
		// Taking someone's username is refused, and changes nothing.
		if _, err := d.UpdateUser(ctx, "u3", func(u *directory.User) error { u.Username = "alice"; u.Name = "X"; return nil }); !errors.Is(err, directory.ErrUsernameTaken) {
			t.Errorf("renaming onto a taken username: %v", err)
		}
		if u, _ := d.User(ctx, "u3"); u.Username != "alice2" || u.Name != "" {
			t.Errorf("after a refused rename: %+v", u)
		}
		if _, err := d.UpdateUser(ctx, "nope", func(*directory.User) error { return nil }); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("updating nobody: %v", err)
		}
	})
}

// TestUniqueUnderConcurrency: of many people created at once with one
// username, exactly one exists afterwards.
func TestUniqueUnderConcurrency(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 20 {
			wg.Go(func() {
				err := d.CreateUser(ctx, user(fmt.Sprintf("u%d", i), "dup", fmt.Sprintf("u%d@example.com", i)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case !errors.Is(err, directory.ErrUsernameTaken):
					t.Errorf("create %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d creates of one username won, want 1", won)
		}
	})
}

func TestOrgsAndMembers(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		for _, u := range []string{"ann", "bob", "cat"} {
			must(t, d.CreateUser(ctx, user("u_"+u, u, u+"@example.com")))
		}
		must(t, d.CreateOrg(ctx, directory.Org{ID: "acme", Name: "ACME"}, "u_ann"))
		if err := d.CreateOrg(ctx, directory.Org{ID: "acme"}, "u_bob"); !errors.Is(err, directory.ErrIDTaken) {
			t.Errorf("a second acme: %v", err)
		}
		if err := d.CreateOrg(ctx, directory.Org{ID: "ghost"}, "u_nobody"); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("an org for nobody: %v", err)
		}
		if _, err := d.Org(ctx, "ghost"); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("the refused org exists: %v", err)
		}
		if got, err := d.Orgs(ctx, "ghost", "acme"); err != nil || len(got) != 2 || got[0] != nil || got[1] == nil || got[1].Name != "ACME" {
			t.Errorf("Orgs: %v, %v", got, err)
		}
		must(t, d.AddMember(ctx, "acme", "u_bob", directory.RoleAdmin))
		for _, tc := range []struct {
			name       string
			user, role string
			want       error
		}{
			{"fail/already-member", "u_bob", directory.RoleMember, directory.ErrMember},
			{"fail/no-such-role", "u_cat", "superuser", directory.ErrBadRole},
			{"fail/no-such-user", "u_zed", directory.RoleMember, directory.ErrNotFound},
		} {
			if err := d.AddMember(ctx, "acme", tc.user, tc.role); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		if role, err := d.Role(ctx, "acme", "u_bob"); err != nil || role != directory.RoleAdmin {
			t.Errorf("bob's role: %q %v", role, err)
		}
		if _, err := d.Role(ctx, "acme", "u_cat"); !errors.Is(err, directory.ErrNotMember) {
			t.Errorf("cat's role: %v", err)
		}

		// The last owner can neither leave nor be demoted...
		if err := d.RemoveMember(ctx, "acme", "u_ann"); !errors.Is(err, directory.ErrLastOwner) {
			t.Errorf("removing the last owner: %v", err)
		}
		if err := d.SetRole(ctx, "acme", "u_ann", directory.RoleAdmin); !errors.Is(err, directory.ErrLastOwner) {
			t.Errorf("demoting the last owner: %v", err)
		}
		// ...until there is another.
		must(t, d.SetRole(ctx, "acme", "u_bob", directory.RoleOwner))
		must(t, d.SetRole(ctx, "acme", "u_ann", directory.RoleMember))
		if err := d.SetRole(ctx, "acme", "u_bob", directory.RoleAdmin); !errors.Is(err, directory.ErrLastOwner) {
			t.Errorf("demoting bob, now the last owner: %v", err)
		}
		must(t, d.RemoveMember(ctx, "acme", "u_ann"))
		if err := d.RemoveMember(ctx, "acme", "u_ann"); !errors.Is(err, directory.ErrNotMember) {
			t.Errorf("removing a non-member: %v", err)
		}
		if m, err := d.OrgsOf(ctx, "u_ann"); err != nil || len(m) != 0 {
			t.Errorf("ann's orgs after leaving: %v %v", m, err)
		}
		if m, err := d.OrgsOf(ctx, "u_bob"); err != nil || !slices.Equal(m, []directory.Membership{{OrgID: "acme", Role: directory.RoleOwner}}) {
			t.Errorf("bob's orgs: %v %v", m, err)
		}
		if o, err := d.UpdateOrg(ctx, "acme", func(o *directory.Org) error { o.MFARequired = true; return nil }); err != nil || !o.MFARequired {
			t.Errorf("UpdateOrg: %+v %v", o, err)
		}
		if o, _ := d.Org(ctx, "acme"); !o.MFARequired || o.Name != "ACME" {
			t.Errorf("acme after UpdateOrg: %+v", o)
		}
	})
}

// TestTwoOwnersDemotingEachOther: of two owners demoting each other at
// once, one stays owner.
func TestTwoOwnersDemotingEachOther(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		for i := range 10 {
			org := fmt.Sprintf("o%d", i)
			must(t, d.CreateUser(ctx, user("a"+org, "a"+org, "")))
			must(t, d.CreateUser(ctx, user("b"+org, "b"+org, "")))
			must(t, d.CreateOrg(ctx, directory.Org{ID: org}, "a"+org))
			must(t, d.AddMember(ctx, org, "b"+org, directory.RoleOwner))
			var wg sync.WaitGroup
			wg.Go(func() { _ = d.SetRole(ctx, org, "a"+org, directory.RoleMember) })
			wg.Go(func() { _ = d.RemoveMember(ctx, org, "b"+org) })
			wg.Wait()
			ra, _ := d.Role(ctx, org, "a"+org)
			rb, _ := d.Role(ctx, org, "b"+org)
			if ra != directory.RoleOwner && rb != directory.RoleOwner {
				t.Fatalf("no owner left: a %q, b %q", ra, rb)
			}
			if ra == directory.RoleOwner && rb == directory.RoleOwner {
				t.Fatalf("neither change happened")
			}
		}
	})
}

func TestMembersPaging(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		must(t, d.CreateUser(ctx, user("u000", "owner", "")))
		must(t, d.CreateOrg(ctx, directory.Org{ID: "big"}, "u000"))
		for i := 1; i < 120; i++ {
			id := fmt.Sprintf("u%03d", i)
			must(t, d.CreateUser(ctx, user(id, "user"+id, "")))
			must(t, d.AddMember(ctx, "big", id, directory.RoleMember))
		}
		var seen []string
		after := ""
		for {
			page, err := d.Members(ctx, "big", after, 50)
			must(t, err)
			if len(page) == 0 {
				break
			}
			if len(page) > 50 {
				t.Fatalf("a page of %d", len(page))
			}
			for _, m := range page {
				seen = append(seen, m.User.ID)
			}
			after = page[len(page)-1].User.ID
		}
		if len(seen) != 120 || !slices.IsSorted(seen) || seen[0] != "u000" {
			t.Fatalf("paged through %d members: %v", len(seen), seen)
		}
		if n, err := d.MemberCount(ctx, "big"); err != nil || n != 120 {
			t.Errorf("MemberCount = %d, %v", n, err)
		}
	})
}

func TestSeedIsIdempotent(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		users := []directory.User{user("u1", "ann", "ann@example.com"), user("u2", "bob", "bob@example.com")}
		orgs := []directory.SeedOrgSpec{{Org: directory.Org{ID: "acme", Name: "ACME"},
			Members: []directory.Membership{{OrgID: "u1", Role: directory.RoleOwner}, {OrgID: "u2", Role: directory.RoleMember}}}}
		must(t, d.Seed(ctx, users, orgs))
		// Run-time changes...
		must(t, d.RemoveMember(ctx, "acme", "u2"))
		if _, err := d.UpdateUser(ctx, "u1", func(u *directory.User) error { u.Name = "Ann"; return nil }); err != nil {
			t.Fatal(err)
		}
		// ...survive a restart, and a second replica seeding at once.
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := d.Seed(ctx, users, orgs); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if _, err := d.Role(ctx, "acme", "u2"); !errors.Is(err, directory.ErrNotMember) {
			t.Errorf("a removed member came back: %v", err)
		}
		if u, _ := d.User(ctx, "u1"); u.Name != "Ann" {
			t.Errorf("a run-time change was undone: %+v", u)
		}
		// A seed whose username someone took at run time is reported.
		must(t, d.CreateUser(ctx, user("u9", "cat", "")))
		err := d.Seed(ctx, append(users, user("u3", "cat", "")), nil)
		if !errors.Is(err, directory.ErrUsernameTaken) {
			t.Errorf("seeding a taken username: %v", err)
		}
	})
}

func TestListUsers(t *testing.T) {
	forEach(t, func(t *testing.T, d *directory.Directory) {
		for i := range 7 {
			must(t, d.CreateUser(ctx, user(fmt.Sprintf("u%d", i), fmt.Sprintf("n%d", i), "")))
		}
		// A refused create leaves no index entry.
		if err := d.CreateUser(ctx, user("u9", "n1", "")); !errors.Is(err, directory.ErrUsernameTaken) {
			t.Fatal(err)
		}
		var ids []string
		for after := ""; ; {
			page, err := d.ListUsers(ctx, after, 3)
			must(t, err)
			if len(page) == 0 {
				break
			}
			for _, u := range page {
				ids = append(ids, u.ID)
			}
			after = page[len(page)-1].ID
		}
		if strings.Join(ids, ",") != "u0,u1,u2,u3,u4,u5,u6" {
			t.Fatalf("listed %v", ids)
		}
	})
}

// callCounter counts the Records calls a directory makes; each is one
// round trip to Redis.
type callCounter struct {
	storage.Records
	n int
}

func (c *callCounter) GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error) {
	c.n++
	return c.Records.GetRecords(ctx, group, names...)
}

func (c *callCounter) Follow(ctx context.Context, group, name, prefix string) ([]byte, []byte, error) {
	c.n++
	return c.Records.Follow(ctx, group, name, prefix)
}

// TestLookupIsOneCall: a login waits for the username's lookup, so it
// reads the entry and the person it names in one call, found or not.
func TestLookupIsOneCall(t *testing.T) {
	for backend, open := range backends {
		t.Run(backend, func(t *testing.T) {
			c := &callCounter{Records: open(t)}
			d := directory.New(c, nil)
			must(t, d.CreateUser(ctx, user("u1", "alice", "alice@example.com")))
			for name, lookup := range map[string]func() (*directory.User, error){
				"ok/username":   func() (*directory.User, error) { return d.ByUsername(ctx, "Alice") },
				"ok/email":      func() (*directory.User, error) { return d.ByEmail(ctx, "ALICE@example.com") },
				"fail/username": func() (*directory.User, error) { return d.ByUsername(ctx, "bob") },
			} {
				c.n = 0
				u, err := lookup()
				switch {
				case strings.HasPrefix(name, "ok/") && (err != nil || u.ID != "u1"):
					t.Fatalf("%s = %v, %v; want u1", name, u, err)
				case strings.HasPrefix(name, "fail/") && !errors.Is(err, directory.ErrNotFound):
					t.Fatalf("%s = %v, %v; want ErrNotFound", name, u, err)
				case c.n != 1:
					t.Fatalf("%s: %d calls, want 1", name, c.n)
				}
			}
		})
	}
}

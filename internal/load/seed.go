package load

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepup-dev/stepup/authz/directory"
)

// Seeding writes people and an organization straight into a server's
// directory, through the directory package's own calls (CreateUser,
// CreateOrg, AddMember), so that the records and indexes are exactly those
// the server writes; only the HTTP API and its per-request costs are left
// out. Person i is SeedUsername(i), SeedID(i), SeedEmail(i), all with one
// password hash, so that a million people cost one argon2id computation.

// SeedOptions configure Seed.
type SeedOptions struct {
	// Users is how many people: person 0 … Users-1.
	Users int
	// PasswordHash is every seeded person's password hash (argon2id, as
	// authz.HashPassword makes it).
	PasswordHash string
	// Org, if set, is an organization of OrgSize members: every
	// (Users/OrgSize)-th person, person 0 its owner, the others members.
	Org string
	// OrgSize defaults to 10,000, and is at most Users.
	OrgSize int
	// Workers is how many calls are in flight at once (default 16: enough
	// to keep Redis busy while the others wait for their replies).
	Workers int
	// Progress, if set, is called about every Interval (default 5s) while
	// people are written, with how many are done.
	Progress func(done int)
	Interval time.Duration
}

// SeedReport is what Seed did. A person or membership already there (a
// second run, or one that was interrupted) is counted as existing and left
// alone.
type SeedReport struct {
	Users, NewUsers int
	UsersTook       time.Duration
	// Org is empty when no organization was asked for.
	Org                 string
	Members, NewMembers int
	OrgTook             time.Duration
	// Owner is the username of the organization's owner, person 0.
	Owner string
}

// SeedUsername is person i's username.
func SeedUsername(i int) string { return fmt.Sprintf("bench%07d", i) }

// SeedEmail is person i's email address.
func SeedEmail(i int) string { return SeedUsername(i) + "@bench.example.com" }

// SeedID is person i's id, shaped like the server's ("u_" and 16 base64url
// characters of 12 bytes) and spread over the byte order as random ids
// are, so that the indexes look like a real directory's; the last four
// bytes are i, so ids are distinct and a second run finds the same ones.
func SeedID(i int) string {
	var raw [12]byte
	binary.BigEndian.PutUint64(raw[:8], mix(uint64(i)))
	binary.BigEndian.PutUint32(raw[8:], uint32(i))
	return "u_" + base64.RawURLEncoding.EncodeToString(raw[:])
}

// mix is SplitMix64's finalizer: distinct inputs, scattered outputs.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// SeedMembers is which people are the organization's members, in order,
// the first its owner: every (users/size)-th person.
func SeedMembers(users, size int) []int {
	size = min(size, users)
	if size <= 0 {
		return nil
	}
	step := users / size
	out := make([]int, size)
	for j := range out {
		out[j] = j * step
	}
	return out
}

// Seed writes o.Users people and the organization into d.
func Seed(ctx context.Context, d *directory.Directory, o SeedOptions) (SeedReport, error) {
	if o.Users < 1 {
		return SeedReport{}, errors.New("seed: at least one person")
	}
	if o.PasswordHash == "" {
		return SeedReport{}, errors.New("seed: no password hash")
	}
	if o.OrgSize <= 0 {
		o.OrgSize = 10_000
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	rep := SeedReport{Users: o.Users}
	created := time.Now().UTC()

	var fresh, done atomic.Int64
	stop := make(chan struct{})
	var ticker sync.WaitGroup
	if o.Progress != nil {
		ticker.Go(func() {
			t := time.NewTicker(o.Interval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					o.Progress(int(done.Load()))
				}
			}
		})
	}
	start := time.Now()
	err := parallel(ctx, o.Workers, o.Users, func(i int) error {
		err := d.CreateUser(ctx, directory.User{
			ID: SeedID(i), Username: SeedUsername(i), Email: SeedEmail(i), Name: fmt.Sprintf("Bench Person %d", i),
			PasswordHash: o.PasswordHash, EmailVerified: true, Created: created,
		})
		switch {
		case err == nil:
			fresh.Add(1)
		case errors.Is(err, directory.ErrIDTaken): // seeded before
		default:
			return fmt.Errorf("person %d (%s): %w", i, SeedUsername(i), err)
		}
		done.Add(1)
		return nil
	})
	close(stop)
	ticker.Wait()
	rep.NewUsers, rep.UsersTook = int(fresh.Load()), time.Since(start)
	if err != nil || o.Org == "" {
		return rep, err
	}

	members := SeedMembers(o.Users, o.OrgSize)
	rep.Org, rep.Members, rep.Owner = o.Org, len(members), SeedUsername(members[0])
	start = time.Now()
	err = d.CreateOrg(ctx, directory.Org{ID: o.Org, Name: "Bench " + o.Org}, SeedID(members[0]))
	switch {
	case err == nil:
		fresh.Store(1)
	case errors.Is(err, directory.ErrIDTaken):
		fresh.Store(0)
		role, err := d.Role(ctx, o.Org, SeedID(members[0]))
		if err != nil || role != directory.RoleOwner {
			return rep, fmt.Errorf("seed: organization %s exists, and %s is not its owner (%v): seed another organization", o.Org, rep.Owner, err)
		}
	default:
		return rep, fmt.Errorf("seed: organization %s: %w", o.Org, err)
	}
	err = parallel(ctx, o.Workers, len(members)-1, func(j int) error {
		i := members[j+1]
		err := d.AddMember(ctx, o.Org, SeedID(i), directory.RoleMember)
		switch {
		case err == nil:
			fresh.Add(1)
		case errors.Is(err, directory.ErrMember):
		default:
			return fmt.Errorf("seed: member %s of %s: %w", SeedUsername(i), o.Org, err)
		}
		return nil
	})
	rep.NewMembers, rep.OrgTook = int(fresh.Load()), time.Since(start)
	return rep, err
}

// parallel calls fn(0) … fn(n-1) from workers goroutines and returns the
// first error, after which no new call starts.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

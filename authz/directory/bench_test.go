package directory_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// BenchmarkDirectory measures, on a real redis-server, what a login reads
// from the directory (ByUsername) and a page of 50 members from the middle
// of an organization, beside the raw cost: one plain GET through the same
// client, measured in the same run. Each reports its round trips (counted
// by a go-redis hook) and its ratio to that GET.
//
// It runs with 1,000 users unless STEPUP_BENCH_USERS names more sizes
// (comma-separated, e.g. 1000000); go test without -bench runs none of it.
// Each size has its own redis-server, loaded through the public API
// (CreateUser, CreateOrg, AddMember) by concurrent workers, and an
// organization of 10,000 members (all of them when there are fewer
// people). How long loading took and Redis' used_memory (INFO memory)
// are logged, which go test shows with -v.
//
//	go test -run XXX -bench Directory -v ./authz/directory
//	STEPUP_BENCH_USERS=1000000 go test -run XXX -bench Directory -benchtime 3s -v -timeout 30m ./authz/directory
func BenchmarkDirectory(b *testing.B) {
	sizes := []int{1000}
	if v := os.Getenv("STEPUP_BENCH_USERS"); v != "" {
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(s), "_", ""))
			if err != nil || n < 2 {
				b.Fatalf("STEPUP_BENCH_USERS=%q: want sizes of at least 2, comma-separated", v)
			}
			if !slices.Contains(sizes, n) {
				sizes = append(sizes, n)
			}
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) { benchDirectory(b, n) })
	}
}

// benchOrgSize is how many members the benchmark's organization has.
const benchOrgSize = 10_000

// benchLoaders is how many goroutines load people at once: enough to keep
// redis-server busy while the others wait for replies.
const benchLoaders = 16

func benchDirectory(b *testing.B, n int) {
	testenv.Require(b, "redis-server", "redis-server")
	addr := testenv.StartRedis(b)
	st, err := redis.New(redis.Config{URL: "redis://" + addr + "/0"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	var trips atomic.Int64
	st.AddHook(tripCounter{&trips})
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	b.Cleanup(func() { _ = admin.Close() })
	d := directory.New(st, nil)
	before := usedMemory(b, admin)

	start := time.Now()
	parallel(b, n, func(i int) error { return d.CreateUser(ctx, benchUser(i)) })
	loaded := time.Since(start)

	// The organization: every (n/m)-th person, the first one its owner.
	m := min(benchOrgSize, n)
	step := n / m
	members := make([]string, m)
	for j := range members {
		members[j] = benchID(j * step)
	}
	start = time.Now()
	if err := d.CreateOrg(ctx, directory.Org{ID: "o_bench", Name: "Bench"}, members[0]); err != nil {
		b.Fatal(err)
	}
	parallel(b, m-1, func(j int) error { return d.AddMember(ctx, "o_bench", members[j+1], directory.RoleMember) })
	orgLoaded := time.Since(start)
	if c, err := d.MemberCount(ctx, "o_bench"); err != nil || c != int64(m) {
		b.Fatalf("the organization has %d members (%v), want %d", c, err, m)
	}
	after := usedMemory(b, admin)
	b.Logf("%d users in %v (%.0f/s, %d loaders); an organization of %d members in %v; Redis used_memory %s, %.0f bytes more per user",
		n, loaded.Round(time.Millisecond), float64(n)/loaded.Seconds(), benchLoaders, m, orgLoaded.Round(time.Millisecond),
		mib(after), float64(after-before)/float64(n))

	// A page from the middle: members are in id order.
	slices.Sort(members)
	mid := members[m/2]
	page, err := d.Members(ctx, "o_bench", mid, 50)
	if err != nil || len(page) != 50 || page[0].User.ID != members[m/2+1] {
		b.Fatalf("Members from the middle: %d members (%v)", len(page), err)
	}

	// Whom the logins look up: people drawn at random from the whole
	// directory.
	rng := rand.New(rand.NewPCG(1, 2))
	names := make([]string, 1<<12)
	for i := range names {
		names[i] = benchUser(rng.IntN(n)).Username
	}
	if err := st.Put(ctx, "bench", "raw", []byte("a value"), 0); err != nil {
		b.Fatal(err)
	}

	// Each operation is timed alone (b.Loop), beside the raw cost timed the
	// same way just before it: one GET of a short value through the same
	// client, one round trip. x-GET is the ratio of the two. Wall time
	// varies from run to run with the machine's state, so sizes are
	// compared within one run; to tell the client's work from Redis' and
	// from waiting, each also reports this process' CPU time (cpu-ns/op)
	// and the time Redis spent executing commands (redis-ns/op, from INFO
	// commandstats, which Redis keeps in whole microseconds per call).
	var rawNs float64
	measure := func(b *testing.B, raw bool, op func(i int) error) {
		b.ReportAllocs()
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		t0, cpu0, i := trips.Load(), cpuTime(b), 0
		for b.Loop() {
			if err := op(i); err != nil {
				b.Fatal(err)
			}
			i++
		}
		per := func(v float64) float64 { return v / float64(b.N) }
		ns := per(float64(b.Elapsed().Nanoseconds()))
		b.ReportMetric(per(float64(trips.Load()-t0)), "trips/op")
		b.ReportMetric(per(float64((cpuTime(b) - cpu0).Nanoseconds())), "cpu-ns/op")
		b.ReportMetric(per(float64(redisTime(b, admin).Nanoseconds())), "redis-ns/op")
		switch {
		case raw:
			rawNs = ns
		case rawNs > 0: // not when -bench left the GET out
			b.ReportMetric(ns/rawNs, "x-GET")
		}
	}
	b.Run("GET", func(b *testing.B) {
		measure(b, true, func(int) error {
			_, err := st.Get(ctx, "bench", "raw")
			return err
		})
	})
	b.Run("ByUsername", func(b *testing.B) {
		measure(b, false, func(i int) error {
			_, err := d.ByUsername(ctx, names[i%len(names)])
			return err
		})
	})
	b.Run("Members50", func(b *testing.B) {
		measure(b, false, func(int) error {
			page, err := d.Members(ctx, "o_bench", mid, 50)
			if err == nil && len(page) != 50 {
				err = fmt.Errorf("a page of %d members", len(page))
			}
			return err
		})
	})
}

// parallel calls fn(0) … fn(n-1) from benchLoaders goroutines and fails
// the benchmark on the first error.
func parallel(b *testing.B, n int, fn func(i int) error) {
	b.Helper()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(benchLoaders, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err) })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// benchID is person i's id, shaped like the server's ("u_" and 16
// base64url characters) and spread over the byte order as random ids are;
// the last four bytes are i, so ids are distinct.
func benchID(i int) string {
	var raw [12]byte
	binary.BigEndian.PutUint64(raw[:8], mix(uint64(i)))
	binary.BigEndian.PutUint32(raw[8:], uint32(i))
	return "u_" + base64.RawURLEncoding.EncodeToString(raw[:])
}

// benchUser is person i, with a record the size of a real one: an email
// address, a name and an argon2id string of the server's parameters (not
// a hash of anything: computing a million would take hours).
func benchUser(i int) directory.User {
	var salt [16]byte
	var key [32]byte
	for j := 0; j < len(salt); j += 8 {
		binary.BigEndian.PutUint64(salt[j:], mix(uint64(i)<<8|uint64(j)))
	}
	for j := 0; j < len(key); j += 8 {
		binary.BigEndian.PutUint64(key[j:], mix(uint64(i)<<8|uint64(128+j)))
	}
	b64 := base64.RawStdEncoding
	return directory.User{
		ID:            benchID(i),
		Username:      fmt.Sprintf("user%07d", i),
		Email:         fmt.Sprintf("user%07d@example.com", i),
		Name:          fmt.Sprintf("Bench User %d", i),
		PasswordHash:  "$argon2id$v=19$m=19456,t=2,p=1$" + b64.EncodeToString(salt[:]) + "$" + b64.EncodeToString(key[:]),
		EmailVerified: true,
		Created:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// mix is SplitMix64's finalizer: distinct inputs, scattered outputs.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// usedMemory is Redis' used_memory (INFO memory), in bytes.
func usedMemory(b *testing.B, admin *goredis.Client) int64 {
	b.Helper()
	info, err := admin.Info(ctx, "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatalf("INFO memory: used_memory:%s", v)
			}
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}

// redisTime is how long Redis spent executing commands since CONFIG
// RESETSTAT, from INFO commandstats, leaving out CONFIG and INFO
// themselves.
func redisTime(b *testing.B, admin *goredis.Client) time.Duration {
	b.Helper()
	info, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var usec int64
	for line := range strings.SplitSeq(info, "\r\n") {
		name, stats, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") || name == "config" || name == "info" {
			continue
		}
		for field := range strings.SplitSeq(stats, ",") {
			if v, ok := strings.CutPrefix(field, "usec="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatalf("INFO commandstats: %s", line)
				}
				usec += n
			}
		}
	}
	return time.Duration(usec) * time.Microsecond
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// tripCounter counts what go-redis sends: a command, a script or a whole
// pipeline is one round trip.
type tripCounter struct{ n *atomic.Int64 }

func (tripCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h tripCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h tripCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// Package storetest is the storage contract, written once as tests and run
// against every backend (memory, Redis standalone, Redis Cluster): KV,
// Grants and Records (records.go), and what each must keep atomic.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// Harness is a fresh, empty store with its clock. Advance moves the store's
// clock forward: the memory store's fake clock, or real time for Redis (so
// the suite keeps its durations short).
type Harness struct {
	Store   storage.Store
	Now     func() time.Time
	Advance func(time.Duration)
}

// Run runs the whole contract; newHarness is called once per sub-test.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"kv/get-missing", testGetMissing},
		{"kv/put-get", testPutGet},
		{"kv/expiry", testExpiry},
		{"kv/create", testCreate},
		{"kv/take", testTake},
		{"kv/incr-window", testIncr},
		{"kv/update", testUpdate},
		{"kv/namespaces", testNamespaces},
		{"family/load-missing", testFamilyMissing},
		{"family/put-load", testFamilyPutLoad},
		{"family/spend", testFamilySpend},
		{"family/all-or-nothing", testFamilyAllOrNothing},
		{"family/prefix", testFamilyPrefix},
		{"family/expiry", testFamilyExpiry},
		{"records/get-missing", testRecordsGetMissing},
		{"records/insert-get", testRecordsInsertGet},
		{"records/insert-existing", testRecordsInsertExisting},
		{"records/expect", testRecordsExpect},
		{"records/delete", testRecordsDelete},
		{"records/groups", testRecordsGroups},
		{"records/index", testRecordsIndex},
		{"records/index-paging", testRecordsIndexPaging},
		{"records/binary-and-empty", testRecordsBinary},
		{"atomic/spend-one-winner", testConcurrentSpend},
		{"atomic/take-one-winner", testConcurrentTake},
		{"atomic/create-one-winner", testConcurrentCreate},
		{"atomic/update-no-lost-writes", testConcurrentUpdate},
		{"atomic/incr-no-lost-writes", testConcurrentIncr},
		{"atomic/nested-update", testNestedUpdate},
		{"atomic/records-all-or-nothing", testRecordsAllOrNothing},
		{"atomic/records-unique-one-winner", testRecordsUniqueOneWinner},
		{"atomic/records-expect-no-lost-writes", testRecordsExpectNoLostWrites},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newHarness(t)) })
	}
}

var ctx = context.Background()

func mustGet(t *testing.T, s storage.KV, ns, key, want string) {
	t.Helper()
	got, err := s.Get(ctx, ns, key)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", ns, key, err)
	}
	if string(got) != want {
		t.Fatalf("Get(%s, %s) = %q, want %q", ns, key, got, want)
	}
}

func mustBeMissing(t *testing.T, s storage.KV, ns, key string) {
	t.Helper()
	if v, err := s.Get(ctx, ns, key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get(%s, %s) = %q, %v; want ErrNotFound", ns, key, v, err)
	}
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testGetMissing(t *testing.T, h Harness) {
	mustBeMissing(t, h.Store, "ns", "nope")
	if _, err := h.Store.Take(ctx, "ns", "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Take missing: %v, want ErrNotFound", err)
	}
	check(t, h.Store.Delete(ctx, "ns", "nope"))
}

func testPutGet(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "ns", "k", []byte("v1"), 0))
	mustGet(t, s, "ns", "k", "v1")
	check(t, s.Put(ctx, "ns", "k", []byte("v2"), time.Minute))
	mustGet(t, s, "ns", "k", "v2")
	check(t, s.Delete(ctx, "ns", "k"))
	mustBeMissing(t, s, "ns", "k")
	// Binary-safe values and keys with separators survive.
	bin := []byte{0, 1, 2, 255, '\n', '{', '}'}
	check(t, s.Put(ctx, "ns", "a:b{c}", bin, 0))
	mustGet(t, s, "ns", "a:b{c}", string(bin))
}

func testExpiry(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "ns", "short", []byte("x"), short))
	check(t, s.Put(ctx, "ns", "long", []byte("y"), time.Hour))
	check(t, s.Put(ctx, "ns", "forever", []byte("z"), 0))
	mustGet(t, s, "ns", "short", "x")
	h.Advance(short + short/2)
	mustBeMissing(t, s, "ns", "short")
	mustGet(t, s, "ns", "long", "y")
	mustGet(t, s, "ns", "forever", "z")
}

func testCreate(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Create(ctx, "once", "step", []byte("1"), short))
	if err := s.Create(ctx, "once", "step", []byte("2"), time.Second); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("second Create: %v, want ErrAlreadyExists", err)
	}
	mustGet(t, s, "once", "step", "1")
	h.Advance(short + short/2)
	check(t, s.Create(ctx, "once", "step", []byte("3"), time.Second))
	mustGet(t, s, "once", "step", "3")
}

func testTake(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "ns", "k", []byte("v"), time.Minute))
	got, err := s.Take(ctx, "ns", "k")
	check(t, err)
	if string(got) != "v" {
		t.Fatalf("Take = %q, want v", got)
	}
	if _, err := s.Take(ctx, "ns", "k"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second Take: %v, want ErrNotFound", err)
	}
}

func testIncr(t *testing.T, h Harness) {
	s := h.Store
	for want := int64(1); want <= 3; want++ {
		n, err := s.Incr(ctx, "fail", "alice", short)
		check(t, err)
		if n != want {
			t.Fatalf("Incr = %d, want %d", n, want)
		}
		h.Advance(short / 4)
	}
	// Now 3/4 into the window, the last increment 1/4 ago. At 5/4 a fixed
	// window has ended; one that each increment pushed out would not have.
	h.Advance(short / 2)
	n, err := s.Incr(ctx, "fail", "alice", short)
	check(t, err)
	if n != 1 {
		t.Fatalf("Incr after the window = %d, want 1 (a fresh window)", n)
	}
}

func testUpdate(t *testing.T, h Harness) {
	s := h.Store
	var sawOld []byte
	check(t, s.Update(ctx, "ns", "k", time.Minute, func(old []byte) ([]byte, error) {
		sawOld = old
		return []byte("first"), nil
	}))
	if sawOld != nil {
		t.Fatalf("Update on a missing key passed %q, want nil", sawOld)
	}
	mustGet(t, s, "ns", "k", "first")
	check(t, s.Update(ctx, "ns", "k", time.Minute, func(old []byte) ([]byte, error) {
		return append(old, "+second"...), nil
	}))
	mustGet(t, s, "ns", "k", "first+second")

	boom := errors.New("boom")
	if err := s.Update(ctx, "ns", "k", time.Minute, func([]byte) ([]byte, error) { return []byte("lost"), boom }); !errors.Is(err, boom) {
		t.Fatalf("Update with failing fn: %v, want boom", err)
	}
	mustGet(t, s, "ns", "k", "first+second")

	check(t, s.Update(ctx, "ns", "k", time.Minute, func([]byte) ([]byte, error) { return nil, nil }))
	mustBeMissing(t, s, "ns", "k")
}

func testNamespaces(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "a", "k", []byte("in a"), 0))
	check(t, s.Put(ctx, "b", "k", []byte("in b"), 0))
	mustGet(t, s, "a", "k", "in a")
	mustGet(t, s, "b", "k", "in b")
	check(t, s.Delete(ctx, "a", "k"))
	mustGet(t, s, "b", "k", "in b")
}

func load(t *testing.T, s storage.Grants, fam string) map[string]storage.Entry {
	t.Helper()
	got, err := s.LoadFamily(ctx, fam)
	check(t, err)
	return got
}

func testFamilyMissing(t *testing.T, h Harness) {
	if _, err := h.Store.LoadFamily(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("LoadFamily missing: %v, want ErrNotFound", err)
	}
}

func testFamilyPutLoad(t *testing.T, h Harness) {
	s := h.Store
	exp := h.Now().Add(time.Hour)
	check(t, s.ApplyFamily(ctx, "f1", exp, storage.Put("code:a", []byte("A")), storage.Put("pkce:a", []byte("P"))))
	got := load(t, s, "f1")
	if len(got) != 2 || string(got["code:a"].Value) != "A" || got["code:a"].Spent || string(got["pkce:a"].Value) != "P" {
		t.Fatalf("LoadFamily = %+v", got)
	}
	check(t, s.ApplyFamily(ctx, "f1", exp, storage.Delete("pkce:a")))
	if got := load(t, s, "f1"); len(got) != 1 {
		t.Fatalf("after Delete: %+v", got)
	}
	// Families are independent.
	if _, err := s.LoadFamily(ctx, "f2"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("other family: %v", err)
	}
}

func testFamilySpend(t *testing.T, h Harness) {
	s := h.Store
	exp := h.Now().Add(time.Hour)
	check(t, s.ApplyFamily(ctx, "f", exp, storage.Put("code:a", []byte("A"))))
	check(t, s.ApplyFamily(ctx, "f", exp, storage.Spend("code:a")))
	got := load(t, s, "f")
	if !got["code:a"].Spent || string(got["code:a"].Value) != "A" {
		t.Fatalf("a spent record must stay readable and say so: %+v", got["code:a"])
	}
	if err := s.ApplyFamily(ctx, "f", exp, storage.Spend("code:a")); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("second Spend: %v, want ErrAlreadyExists", err)
	}
	if err := s.ApplyFamily(ctx, "f", exp, storage.Spend("code:missing")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Spend of a missing record: %v, want ErrNotFound", err)
	}
	// A Put of a spent name makes it fresh again (a record is replaced whole).
	check(t, s.ApplyFamily(ctx, "f", exp, storage.Put("code:a", []byte("B"))))
	if got := load(t, s, "f")["code:a"]; got.Spent || string(got.Value) != "B" {
		t.Fatalf("after Put over a spent record: %+v", got)
	}
}

func testFamilyAllOrNothing(t *testing.T, h Harness) {
	s := h.Store
	exp := h.Now().Add(time.Hour)
	check(t, s.ApplyFamily(ctx, "f", exp, storage.Put("rt:old", []byte("R")), storage.Put("at:old", []byte("T"))))
	check(t, s.ApplyFamily(ctx, "f", exp, storage.Spend("rt:old")))
	// A rotation that loses the race must leave no trace.
	err := s.ApplyFamily(ctx, "f", exp,
		storage.DeletePrefix("at:"),
		storage.Spend("rt:old"),
		storage.Put("at:new", []byte("T2")),
		storage.Put("rt:new", []byte("R2")))
	if !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("losing rotation: %v, want ErrAlreadyExists", err)
	}
	got := load(t, s, "f")
	if _, ok := got["at:new"]; ok {
		t.Fatal("a failed batch wrote at:new")
	}
	if _, ok := got["at:old"]; !ok {
		t.Fatal("a failed batch deleted at:old")
	}
	// Preconditions see the family as it was before the batch.
	if err := s.ApplyFamily(ctx, "f", exp, storage.Put("x", []byte("1")), storage.Spend("x")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Spend of a name put in the same batch: %v, want ErrNotFound", err)
	}
	if _, ok := load(t, s, "f")["x"]; ok {
		t.Fatal("a failed batch wrote x")
	}
}

func testFamilyPrefix(t *testing.T, h Harness) {
	s := h.Store
	exp := h.Now().Add(time.Hour)
	check(t, s.ApplyFamily(ctx, "f", exp,
		storage.Put("at:1", []byte("a1")), storage.Put("at:2", []byte("a2")),
		storage.Put("rt:1", []byte("r1")), storage.Put("rt:2", []byte("r2"))))
	check(t, s.ApplyFamily(ctx, "f", exp, storage.DeletePrefix("at:"), storage.SpendPrefix("rt:")))
	got := load(t, s, "f")
	if len(got) != 2 || !got["rt:1"].Spent || !got["rt:2"].Spent {
		t.Fatalf("after DeletePrefix(at:) and SpendPrefix(rt:): %+v", got)
	}
	check(t, s.ApplyFamily(ctx, "f", exp, storage.DeletePrefix("rt:")))
	if _, err := s.LoadFamily(ctx, "f"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an emptied family: %v, want ErrNotFound", err)
	}
}

func testFamilyExpiry(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyFamily(ctx, "short", h.Now().Add(short), storage.Put("code:a", []byte("A"))))
	check(t, s.ApplyFamily(ctx, "long", h.Now().Add(short), storage.Put("code:a", []byte("A"))))
	// A later batch extends the family; an earlier expiry never shortens it.
	check(t, s.ApplyFamily(ctx, "long", h.Now().Add(time.Hour), storage.Put("rt:a", []byte("R"))))
	check(t, s.ApplyFamily(ctx, "long", h.Now().Add(time.Millisecond), storage.Put("at:a", []byte("T"))))
	h.Advance(short + short/2)
	if _, err := s.LoadFamily(ctx, "short"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired family: %v, want ErrNotFound", err)
	}
	if got := load(t, s, "long"); len(got) != 3 {
		t.Fatalf("extended family lost records: %+v", got)
	}
}

// short is the lifetime of entries the suite expects to see expire; with
// Redis it is real time, so it must outlast any pause between a write and
// the read after it.
const short = time.Second

const racers = 16

// race runs fn on racers goroutines released together and returns their errors.
func race(fn func(i int) error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

func oneWinner(t *testing.T, errs []error, loser error) {
	t.Helper()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, loser):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d winners, want exactly 1", wins)
	}
}

func testConcurrentSpend(t *testing.T, h Harness) {
	s := h.Store
	exp := h.Now().Add(time.Hour)
	check(t, s.ApplyFamily(ctx, "f", exp, storage.Put("code:a", []byte("A"))))
	errs := race(func(i int) error {
		return s.ApplyFamily(ctx, "f", exp, storage.Spend("code:a"),
			storage.Put(fmt.Sprintf("at:%d", i), []byte("T")))
	})
	oneWinner(t, errs, storage.ErrAlreadyExists)
	tokens := 0
	for name := range load(t, s, "f") {
		if name != "code:a" {
			tokens++
		}
	}
	if tokens != 1 {
		t.Fatalf("%d access tokens issued for one code, want 1", tokens)
	}
}

func testConcurrentTake(t *testing.T, h Harness) {
	check(t, h.Store.Put(ctx, "ns", "k", []byte("v"), time.Minute))
	errs := race(func(int) error { _, err := h.Store.Take(ctx, "ns", "k"); return err })
	oneWinner(t, errs, storage.ErrNotFound)
}

func testConcurrentCreate(t *testing.T, h Harness) {
	errs := race(func(i int) error {
		return h.Store.Create(ctx, "once", "k", []byte(strconv.Itoa(i)), time.Minute)
	})
	oneWinner(t, errs, storage.ErrAlreadyExists)
}

func addOne(old []byte) ([]byte, error) {
	n := 0
	if old != nil {
		var err error
		if n, err = strconv.Atoi(string(old)); err != nil {
			return nil, err
		}
	}
	return []byte(strconv.Itoa(n + 1)), nil
}

func testConcurrentUpdate(t *testing.T, h Harness) {
	for _, err := range race(func(int) error { return h.Store.Update(ctx, "ns", "n", time.Minute, addOne) }) {
		check(t, err)
	}
	mustGet(t, h.Store, "ns", "n", strconv.Itoa(racers))
}

func testConcurrentIncr(t *testing.T, h Harness) {
	for _, err := range race(func(int) error { _, err := h.Store.Incr(ctx, "ns", "n", time.Minute); return err }) {
		check(t, err)
	}
	n, err := h.Store.Incr(ctx, "ns", "n", time.Minute)
	check(t, err)
	if n != racers+1 {
		t.Fatalf("Incr = %d, want %d", n, racers+1)
	}
}

// testNestedUpdate interleaves a second Update of the same key inside the
// first one's fn. Whatever the backend does (block the second until the first
// is done, or make the first retry), both increments must land.
func testNestedUpdate(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "ns", "n", []byte("0"), time.Minute))
	inner := make(chan error, 1)
	calls := 0
	check(t, s.Update(ctx, "ns", "n", time.Minute, func(old []byte) ([]byte, error) {
		calls++
		if calls == 1 {
			go func() { inner <- s.Update(ctx, "ns", "n", time.Minute, addOne) }()
			select {
			case err := <-inner:
				inner <- err // the inner update finished first; keep its result
			case <-time.After(200 * time.Millisecond): // the backend serialises: it waits for us
			}
		}
		return addOne(old)
	}))
	check(t, <-inner)
	mustGet(t, s, "ns", "n", "2")
}

// Package storetest is the storage contract, written once as tests and run
// against every backend (memory, Redis standalone, Redis Cluster): KV,
// Grants, Records (records.go) and Batch (batch.go), and what each must
// keep atomic.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
		{"kv/get-many", testGetMany},
		{"kv/get-many-expiry", testGetManyExpiry},
		{"kv/get-many-no-keys", testGetManyNoKeys},
		{"kv/get-many-500", testGetManyLarge},
		{"kv/get-many-binary-and-empty", testGetManyBinary},
		{"kv/get-many-namespaces", testGetManyNamespaces},
		{"batch/empty", testBatchEmpty},
		{"batch/kv", testBatchKV},
		{"batch/expiry", testBatchExpiry},
		{"batch/swap", testBatchSwap},
		{"batch/records-and-families", testBatchRecordsAndFamilies},
		{"batch/one-key-in-order", testBatchOneKeyInOrder},
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
		{"records/follow", testRecordsFollow},
		{"atomic/spend-one-winner", testConcurrentSpend},
		{"atomic/take-one-winner", testConcurrentTake},
		{"atomic/create-one-winner", testConcurrentCreate},
		{"atomic/update-no-lost-writes", testConcurrentUpdate},
		{"atomic/incr-no-lost-writes", testConcurrentIncr},
		{"atomic/nested-update", testNestedUpdate},
		{"atomic/swap-one-winner", testConcurrentSwap},
		{"atomic/batch-incr-no-lost-writes", testConcurrentBatchIncr},
		{"atomic/batch-spend-one-winner", testConcurrentBatchSpend},
		{"atomic/records-all-or-nothing", testRecordsAllOrNothing},
		{"atomic/records-unique-one-winner", testRecordsUniqueOneWinner},
		{"atomic/records-expect-no-lost-writes", testRecordsExpectNoLostWrites},
		{"atomic/records-follow-consistent", testRecordsFollowConsistent},
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

// getMany calls GetMany and checks that it answers one value per key.
func getMany(t *testing.T, s storage.KV, ns string, keys ...string) [][]byte {
	t.Helper()
	got, err := s.GetMany(ctx, ns, keys...)
	check(t, err)
	if len(got) != len(keys) {
		t.Fatalf("GetMany(%s, %q) = %d values, want %d", ns, keys, len(got), len(keys))
	}
	return got
}

// sameValues compares GetMany's answer with want, where "" is a present
// empty value and a nil want, written absent, an absent key.
func sameValues(t *testing.T, what string, got [][]byte, want []*string) {
	t.Helper()
	for i := range want {
		switch {
		case want[i] == nil && got[i] != nil:
			t.Fatalf("%s: value %d = %q, want nil (absent)", what, i, got[i])
		case want[i] != nil && got[i] == nil:
			t.Fatalf("%s: value %d = nil, want %q", what, i, *want[i])
		case want[i] != nil && string(got[i]) != *want[i]:
			t.Fatalf("%s: value %d = %q, want %q", what, i, got[i], *want[i])
		}
	}
}

func val(s string) *string { return &s }

var absent *string

func testGetMany(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "mfa", "u1", []byte("totp:1"), 0))
	check(t, s.Put(ctx, "mfa", "u3", []byte("totp:3"), time.Hour))
	check(t, s.Create(ctx, "mfa", "u4", []byte("totp:4"), time.Minute))
	_, err := s.Incr(ctx, "mfa", "u6", time.Minute)
	check(t, err)

	// Absent and present mixed, the first and the last absent, one key
	// twice: one value per key, in the order asked.
	keys := []string{"u0", "u1", "u2", "u3", "u4", "u1", "u5", "u6", "u7"}
	got := getMany(t, s, "mfa", keys...)
	sameValues(t, "GetMany", got, []*string{absent, val("totp:1"), absent, val("totp:3"), val("totp:4"), val("totp:1"), absent, val("1"), absent})
	// The same keys reversed: the order is the caller's, not the store's.
	rev := make([]string, len(keys))
	for i, k := range keys {
		rev[len(keys)-1-i] = k
	}
	gotRev := getMany(t, s, "mfa", rev...)
	for i := range keys {
		if !bytes.Equal(got[i], gotRev[len(keys)-1-i]) || (got[i] == nil) != (gotRev[len(keys)-1-i] == nil) {
			t.Fatalf("GetMany reversed: key %q = %q, in order %q", keys[i], gotRev[len(keys)-1-i], got[i])
		}
	}
	// It agrees with Get, key by key.
	for i, k := range keys {
		v, err := s.Get(ctx, "mfa", k)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			if got[i] != nil {
				t.Fatalf("Get(%s) says absent, GetMany %q", k, got[i])
			}
		case err != nil:
			t.Fatal(err)
		case string(v) != string(got[i]):
			t.Fatalf("Get(%s) = %q, GetMany %q", k, v, got[i])
		}
	}
	// A value handed out is the caller's: changing it changes nothing stored.
	got[1][0] = 'X'
	mustGet(t, s, "mfa", "u1", "totp:1")
	// What is written, taken or deleted since shows.
	check(t, s.Put(ctx, "mfa", "u0", []byte("new"), 0))
	_, err = s.Take(ctx, "mfa", "u3")
	check(t, err)
	check(t, s.Delete(ctx, "mfa", "u4"))
	sameValues(t, "GetMany after writes", getMany(t, s, "mfa", "u0", "u3", "u4", "u1"), []*string{val("new"), absent, absent, val("totp:1")})
	// Only absent keys: all nil, no error.
	sameValues(t, "GetMany of absent keys", getMany(t, s, "mfa", "x", "y"), []*string{absent, absent})
	sameValues(t, "GetMany in an unused namespace", getMany(t, s, "never", "u1"), []*string{absent})
}

func testGetManyExpiry(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "mfa-reminded", "short1", []byte("a"), short))
	check(t, s.Put(ctx, "mfa-reminded", "long", []byte("b"), time.Hour))
	check(t, s.Create(ctx, "mfa-reminded", "short2", []byte("c"), short))
	_, err := s.Incr(ctx, "mfa-reminded", "window", short)
	check(t, err)
	check(t, s.Put(ctx, "mfa-reminded", "forever", []byte("d"), 0))
	keys := []string{"short1", "long", "short2", "window", "forever"}
	sameValues(t, "GetMany before expiry", getMany(t, s, "mfa-reminded", keys...), []*string{val("a"), val("b"), val("c"), val("1"), val("d")})
	h.Advance(short + short/2)
	sameValues(t, "GetMany after expiry", getMany(t, s, "mfa-reminded", keys...), []*string{absent, val("b"), absent, absent, val("d")})
	// And an expired key stays absent to Get as well.
	mustBeMissing(t, s, "mfa-reminded", "short1")
}

func testGetManyNoKeys(t *testing.T, h Harness) {
	s := h.Store
	for _, keys := range [][]string{nil, {}} {
		got, err := s.GetMany(ctx, "mfa", keys...)
		check(t, err)
		if len(got) != 0 {
			t.Fatalf("GetMany without keys = %q, want none", got)
		}
	}
	check(t, s.Put(ctx, "mfa", "k", []byte("v"), 0))
	if got, err := s.GetMany(ctx, "mfa"); err != nil || len(got) != 0 {
		t.Fatalf("GetMany without keys = %q, %v; want none", got, err)
	}
}

// testGetManyLarge reads 500 keys, as a page of members might, every third
// one absent; on a Cluster they spread over every node.
func testGetManyLarge(t *testing.T, h Harness) {
	s := h.Store
	const n = 500
	keys := make([]string, n)
	want := make([]*string, n)
	for i := range n {
		keys[i] = "user-" + strconv.Itoa(i)
		if i%3 == 0 {
			continue
		}
		v := "links:" + strconv.Itoa(i) + strings.Repeat("x", i%7)
		want[i] = &v
		check(t, s.Put(ctx, "sso-links", keys[i], []byte(v), time.Hour))
	}
	sameValues(t, "GetMany of 500", getMany(t, s, "sso-links", keys...), want)
}

func testGetManyBinary(t *testing.T, h Harness) {
	s := h.Store
	bin := []byte{0, 1, 2, 0xff, 0xfe, '\n', '\r', '{', '}', ':', '%', '\'', '"', '\\', 0}
	keys := []string{"a:b{c}", "%7B", "\x00", "n\x00ul", "\xff\xfe", "", " ", "{}"}
	for i, k := range keys {
		check(t, s.Put(ctx, "bin{}", k, append([]byte{byte(i)}, bin...), 0))
	}
	got := getMany(t, s, "bin{}", append(keys, "absent")...)
	for i, k := range keys {
		if want := append([]byte{byte(i)}, bin...); !bytes.Equal(got[i], want) {
			t.Fatalf("GetMany: key %q = %q, want %q", k, got[i], want)
		}
	}
	if got[len(keys)] != nil {
		t.Fatalf("GetMany: absent key = %q, want nil", got[len(keys)])
	}

	// An empty value is present: it reads back empty, not nil, whether it
	// was put empty, put nil, created empty or put over a longer one.
	check(t, s.Put(ctx, "ns", "empty", []byte{}, 0))
	check(t, s.Put(ctx, "ns", "nil", nil, 0))
	check(t, s.Create(ctx, "ns", "created", []byte{}, time.Hour))
	check(t, s.Put(ctx, "ns", "overwritten", []byte("long"), 0))
	check(t, s.Put(ctx, "ns", "overwritten", []byte{}, 0))
	vals := getMany(t, s, "ns", "empty", "nil", "created", "overwritten", "absent")
	for i, k := range []string{"empty", "nil", "created", "overwritten"} {
		if vals[i] == nil || len(vals[i]) != 0 {
			t.Fatalf("key %q = %#v, want a non-nil empty value", k, vals[i])
		}
	}
	if vals[4] != nil {
		t.Fatalf("absent key = %#v, want nil", vals[4])
	}
}

func testGetManyNamespaces(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "mfa", "alice", []byte("mfa of alice"), 0))
	check(t, s.Put(ctx, "sso-links", "alice", []byte("links of alice"), 0))
	check(t, s.Put(ctx, "sso-links", "bob", []byte("links of bob"), 0))
	sameValues(t, "GetMany(mfa)", getMany(t, s, "mfa", "alice", "bob"), []*string{val("mfa of alice"), absent})
	sameValues(t, "GetMany(sso-links)", getMany(t, s, "sso-links", "alice", "bob"), []*string{val("links of alice"), val("links of bob")})
	sameValues(t, "GetMany(mfa-reminded)", getMany(t, s, "mfa-reminded", "alice", "bob"), []*string{absent, absent})
	// Separators in a namespace or key do not make one pair read as another.
	check(t, s.Put(ctx, "a:b", "c", []byte("ab/c"), 0))
	check(t, s.Put(ctx, "a", "b:c", []byte("a/bc"), 0))
	sameValues(t, "GetMany(a:b)", getMany(t, s, "a:b", "c", "b:c"), []*string{val("ab/c"), absent})
	sameValues(t, "GetMany(a)", getMany(t, s, "a", "b:c", "c"), []*string{val("a/bc"), absent})
	check(t, s.Delete(ctx, "mfa", "alice"))
	sameValues(t, "GetMany(sso-links) after a delete in mfa", getMany(t, s, "sso-links", "alice"), []*string{val("links of alice")})
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

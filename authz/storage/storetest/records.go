package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// The Records contract: groups of records, changed by all-or-nothing
// batches with preconditions, and sorted indexes over them.

// getRecords reads names from group and fails the test on an error.
func getRecords(t *testing.T, s storage.Records, group string, names ...string) [][]byte {
	t.Helper()
	got, err := s.GetRecords(ctx, group, names...)
	check(t, err)
	if len(got) != len(names) {
		t.Fatalf("GetRecords(%q, %q) returned %d values, want %d", group, names, len(got), len(names))
	}
	return got
}

// mustHold checks that group's record name holds want exactly: present,
// with these bytes (an empty value reads back empty, not nil).
func mustHold(t *testing.T, s storage.Records, group, name string, want []byte) {
	t.Helper()
	got := getRecords(t, s, group, name)[0]
	if got == nil {
		t.Fatalf("record %q of group %q is absent, want %q", name, group, want)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("record %q of group %q = %q, want %q", name, group, got, want)
	}
}

func mustBeAbsent(t *testing.T, s storage.Records, group string, names ...string) {
	t.Helper()
	for i, v := range getRecords(t, s, group, names...) {
		if v != nil {
			t.Fatalf("record %q of group %q = %q, want absent", names[i], group, v)
		}
	}
}

// mustFailOn checks that err is the *RecordError of record name, wrapping want.
func mustFailOn(t *testing.T, err error, name string, want error) {
	t.Helper()
	var re *storage.RecordError
	switch {
	case !errors.As(err, &re):
		t.Fatalf("ApplyRecords: %v, want a *storage.RecordError", err)
	case re.Name != name:
		t.Fatalf("ApplyRecords: %v names %q, want %q", err, re.Name, name)
	case !errors.Is(err, want):
		t.Fatalf("ApplyRecords: %v, want errors.Is %v", err, want)
	}
}

// scan is one ScanIndex page, failing the test on an error.
func scan(t *testing.T, s storage.Records, group, index, after string, limit int) []string {
	t.Helper()
	got, err := s.ScanIndex(ctx, group, index, after, limit)
	check(t, err)
	return got
}

// mustList checks the whole index, one page.
func mustList(t *testing.T, s storage.Records, group, index string, want ...string) {
	t.Helper()
	got := scan(t, s, group, index, "", len(want)+10)
	if !slices.Equal(got, want) {
		t.Fatalf("index %q of group %q = %q, want %q", index, group, got, want)
	}
	mustSize(t, s, group, index, int64(len(want)))
}

func mustSize(t *testing.T, s storage.Records, group, index string, want int64) {
	t.Helper()
	n, err := s.IndexSize(ctx, group, index)
	check(t, err)
	if n != want {
		t.Fatalf("IndexSize(%q, %q) = %d, want %d", group, index, n, want)
	}
}

func testRecordsGetMissing(t *testing.T, h Harness) {
	s := h.Store
	got := getRecords(t, s, "people", "user:a", "user:b")
	if got[0] != nil || got[1] != nil {
		t.Fatalf("GetRecords of a group never written = %q, want two nils", got)
	}
	if got := getRecords(t, s, "people"); len(got) != 0 {
		t.Fatalf("GetRecords without names = %q", got)
	}
	check(t, s.ApplyRecords(ctx, "people", storage.Insert("user:a", []byte("A"))))
	got = getRecords(t, s, "people", "user:b", "user:a", "user:c")
	if got[0] != nil || string(got[1]) != "A" || got[2] != nil {
		t.Fatalf("GetRecords(b, a, c) = %q, want [nil A nil]", got)
	}
	// A batch of nothing changes nothing.
	check(t, s.ApplyRecords(ctx, "people"))
	mustHold(t, s, "people", "user:a", []byte("A"))
}

func testRecordsInsertGet(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "people",
		storage.Insert("user:1", []byte("alice")),
		storage.Insert("name:alice", []byte("1")),
		storage.Set("user:2", []byte("bob"))))
	got := getRecords(t, s, "people", "user:1", "name:alice", "user:2")
	if string(got[0]) != "alice" || string(got[1]) != "1" || string(got[2]) != "bob" {
		t.Fatalf("GetRecords = %q", got)
	}
	// Set replaces.
	check(t, s.ApplyRecords(ctx, "people", storage.Set("user:2", []byte("robert"))))
	mustHold(t, s, "people", "user:2", []byte("robert"))
	// The caller's slice is not kept: changing it afterwards changes nothing.
	v := []byte("carol")
	check(t, s.ApplyRecords(ctx, "people", storage.Insert("user:3", v)))
	v[0] = 'X'
	mustHold(t, s, "people", "user:3", []byte("carol"))
	got = getRecords(t, s, "people", "user:3")
	got[0][0] = 'Y'
	mustHold(t, s, "people", "user:3", []byte("carol"))
}

func testRecordsInsertExisting(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "people",
		storage.Insert("user:1", []byte("alice")),
		storage.Insert("name:alice", []byte("1")),
		storage.AddToIndex("users", "1")))
	// Taking a name that is taken fails the whole batch, naming the record,
	// and what came before it in the batch does not land.
	err := s.ApplyRecords(ctx, "people",
		storage.Set("user:1", []byte("mallory")),
		storage.Insert("user:2", []byte("alice again")),
		storage.AddToIndex("users", "2"),
		storage.Insert("name:alice", []byte("2")),
		storage.Remove("user:1"))
	mustFailOn(t, err, "name:alice", storage.ErrAlreadyExists)
	mustHold(t, s, "people", "user:1", []byte("alice"))
	mustHold(t, s, "people", "name:alice", []byte("1"))
	mustBeAbsent(t, s, "people", "user:2")
	mustList(t, s, "people", "users", "1")

	// A record whose value is empty is present all the same.
	check(t, s.ApplyRecords(ctx, "people", storage.Set("flag", []byte{})))
	mustFailOn(t, s.ApplyRecords(ctx, "people", storage.Insert("flag", []byte("x"))), "flag", storage.ErrAlreadyExists)
	mustHold(t, s, "people", "flag", []byte{})

	// Preconditions see the group as it was before the batch: a record
	// inserted earlier in the batch is not there yet for the ops after it.
	mustFailOn(t, s.ApplyRecords(ctx, "people",
		storage.Insert("user:9", []byte("new")),
		storage.Expect("user:9", []byte("new"))), "user:9", storage.ErrNotFound)
	mustBeAbsent(t, s, "people", "user:9")
	// Nor is one removed earlier in the batch gone yet.
	mustFailOn(t, s.ApplyRecords(ctx, "people",
		storage.Remove("user:1"),
		storage.Insert("user:1", []byte("again"))), "user:1", storage.ErrAlreadyExists)
	mustHold(t, s, "people", "user:1", []byte("alice"))
	// Of several failing preconditions, the first in the batch is reported.
	mustFailOn(t, s.ApplyRecords(ctx, "people",
		storage.Expect("user:8", []byte("x")),
		storage.Insert("user:1", []byte("x"))), "user:8", storage.ErrNotFound)
}

func testRecordsExpect(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "g", storage.Insert("n", []byte("1"))))
	// Match: the batch lands, and ops apply in order.
	check(t, s.ApplyRecords(ctx, "g",
		storage.Expect("n", []byte("1")),
		storage.Set("n", []byte("2")),
		storage.Set("log", []byte("was 1"))))
	mustHold(t, s, "g", "n", []byte("2"))
	mustHold(t, s, "g", "log", []byte("was 1"))
	// Mismatch: someone changed it since it was read.
	mustFailOn(t, s.ApplyRecords(ctx, "g",
		storage.Expect("n", []byte("1")),
		storage.Set("n", []byte("3"))), "n", storage.ErrAlreadyExists)
	mustHold(t, s, "g", "n", []byte("2"))
	// A prefix of the value, or the value and more, is a mismatch.
	mustFailOn(t, s.ApplyRecords(ctx, "g", storage.Expect("log", []byte("was"))), "log", storage.ErrAlreadyExists)
	mustFailOn(t, s.ApplyRecords(ctx, "g", storage.Expect("log", []byte("was 1 "))), "log", storage.ErrAlreadyExists)
	// Absent: someone removed it since, or it never was.
	mustFailOn(t, s.ApplyRecords(ctx, "g",
		storage.Set("other", []byte("x")),
		storage.Expect("gone", []byte("2"))), "gone", storage.ErrNotFound)
	mustBeAbsent(t, s, "g", "other")
	// Expecting empty: matches an empty record, not an absent one.
	mustFailOn(t, s.ApplyRecords(ctx, "g", storage.Expect("empty", []byte{})), "empty", storage.ErrNotFound)
	check(t, s.ApplyRecords(ctx, "g", storage.Insert("empty", []byte{})))
	check(t, s.ApplyRecords(ctx, "g", storage.Expect("empty", []byte{})))
	mustFailOn(t, s.ApplyRecords(ctx, "g", storage.Expect("n", []byte{})), "n", storage.ErrAlreadyExists)
}

func testRecordsDelete(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "g", storage.Insert("a", []byte("A")), storage.Insert("b", []byte("B"))))
	check(t, s.ApplyRecords(ctx, "g", storage.Expect("a", []byte("A")), storage.Remove("a")))
	mustBeAbsent(t, s, "g", "a")
	mustHold(t, s, "g", "b", []byte("B"))
	// Removing what is absent is no error; a removed name can be taken again.
	check(t, s.ApplyRecords(ctx, "g", storage.Remove("a"), storage.Remove("never")))
	check(t, s.ApplyRecords(ctx, "g", storage.Insert("a", []byte("A2"))))
	mustHold(t, s, "g", "a", []byte("A2"))
	// Ops apply in order: a put then a remove of one name removes it, and a
	// remove then a put stores it.
	check(t, s.ApplyRecords(ctx, "g", storage.Set("c", []byte("C")), storage.Remove("c")))
	mustBeAbsent(t, s, "g", "c")
	check(t, s.ApplyRecords(ctx, "g", storage.Remove("b"), storage.Set("b", []byte("B2"))))
	mustHold(t, s, "g", "b", []byte("B2"))
	// Emptying a group leaves nothing behind, and it can be filled again.
	check(t, s.ApplyRecords(ctx, "g", storage.Remove("a"), storage.Remove("b")))
	mustBeAbsent(t, s, "g", "a", "b")
	check(t, s.ApplyRecords(ctx, "g", storage.Insert("a", []byte("A3"))))
	mustHold(t, s, "g", "a", []byte("A3"))
}

// groupNames are told apart by the store, however they spell separators,
// braces or escapes, and whatever they have in common.
var groupNames = []string{"", "a", "a:b", "a%3Ab", "a%", "{a}", "%7Ba%7D", "{", "}", "{}", "a\x00b", "people"}

func testRecordsGroups(t *testing.T, h Harness) {
	s := h.Store
	for i, g := range groupNames {
		v := []byte(strconv.Itoa(i))
		check(t, s.ApplyRecords(ctx, g,
			storage.Insert("r", v),
			storage.AddToIndex("ix", "m"+strconv.Itoa(i)),
			storage.AddToIndex("ix:"+strconv.Itoa(i), "only")))
	}
	for i, g := range groupNames {
		mustHold(t, s, g, "r", []byte(strconv.Itoa(i)))
		mustList(t, s, g, "ix", "m"+strconv.Itoa(i))
		mustList(t, s, g, "ix:"+strconv.Itoa(i), "only")
		if i > 0 {
			mustList(t, s, g, "ix:0")
		}
	}
	// The same name in another group is another record, and a precondition
	// sees only its own group.
	check(t, s.ApplyRecords(ctx, "a", storage.Expect("r", []byte("1")), storage.Remove("r")))
	mustBeAbsent(t, s, "a", "r")
	mustHold(t, s, "a:b", "r", []byte("2"))
	check(t, s.ApplyRecords(ctx, "a", storage.Insert("r", []byte("again"))))
	mustFailOn(t, s.ApplyRecords(ctx, "people", storage.Insert("r", []byte("x"))), "r", storage.ErrAlreadyExists)
	// Records and indexes are apart: a record named like an index is not
	// its member, nor is an index named like a record one of its values.
	check(t, s.ApplyRecords(ctx, "people", storage.Set("ix", []byte("record"))))
	mustList(t, s, "people", "ix", "m11")
	mustHold(t, s, "people", "ix", []byte("record"))
	// So are index names however they are spelled.
	indexNames := []string{"i:x", "i%3Ax", "i{x}", "", "i\x00x"}
	for _, ix := range indexNames {
		check(t, s.ApplyRecords(ctx, "ixnames", storage.AddToIndex(ix, "m"+ix)))
	}
	for _, ix := range indexNames {
		mustList(t, s, "ixnames", ix, "m"+ix)
	}
}

func testRecordsIndex(t *testing.T, h Harness) {
	s := h.Store
	mustList(t, s, "g", "users")
	check(t, s.ApplyRecords(ctx, "g", storage.AddToIndex("users", "bob"), storage.AddToIndex("users", "alice")))
	mustList(t, s, "g", "users", "alice", "bob")
	// Adding a member again is no error and no second member, in a later
	// batch or the same one.
	check(t, s.ApplyRecords(ctx, "g", storage.AddToIndex("users", "bob")))
	check(t, s.ApplyRecords(ctx, "g", storage.AddToIndex("users", "carol"), storage.AddToIndex("users", "carol")))
	mustList(t, s, "g", "users", "alice", "bob", "carol")
	// Removing one; removing an absent one is no error.
	check(t, s.ApplyRecords(ctx, "g", storage.RemoveFromIndex("users", "bob"), storage.RemoveFromIndex("users", "zed")))
	mustList(t, s, "g", "users", "alice", "carol")
	check(t, s.ApplyRecords(ctx, "g", storage.RemoveFromIndex("nope", "x")))
	mustList(t, s, "g", "nope")
	// Ops apply in order: add then remove leaves it out, remove then add in.
	check(t, s.ApplyRecords(ctx, "g", storage.AddToIndex("users", "dave"), storage.RemoveFromIndex("users", "dave")))
	check(t, s.ApplyRecords(ctx, "g", storage.RemoveFromIndex("users", "alice"), storage.AddToIndex("users", "alice")))
	mustList(t, s, "g", "users", "alice", "carol")
	// Indexes of one group are apart; a batch may change several.
	check(t, s.ApplyRecords(ctx, "g",
		storage.AddToIndex("emails", "a@example.com"),
		storage.AddToIndex("admins", "carol"),
		storage.RemoveFromIndex("users", "carol")))
	mustList(t, s, "g", "users", "alice")
	mustList(t, s, "g", "emails", "a@example.com")
	mustList(t, s, "g", "admins", "carol")
	// An index emptied is just empty.
	check(t, s.ApplyRecords(ctx, "g", storage.RemoveFromIndex("admins", "carol")))
	mustList(t, s, "g", "admins")
	if got := scan(t, s, "g", "admins", "carol", 10); len(got) != 0 {
		t.Fatalf("ScanIndex of an emptied index = %q", got)
	}
}

func testRecordsIndexPaging(t *testing.T, h Harness) {
	s := h.Store
	const n, page = 120, 50
	member := func(i int) string { return fmt.Sprintf("m%03d", i) }
	// Added out of order, over several batches.
	for b := 0; b < n; b += 30 {
		var ops []storage.RecordOp
		for i := b; i < b+30; i++ {
			ops = append(ops, storage.AddToIndex("ix", member(i*7%n)))
		}
		check(t, s.ApplyRecords(ctx, "g", ops...))
	}
	mustSize(t, s, "g", "ix", n)
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		got := scan(t, s, "g", "ix", after, page)
		if len(got) == 0 {
			if pages != 3 {
				t.Fatalf("%d pages of %d for %d members, want 3", pages, page, n)
			}
			break
		}
		if want := min(page, n-len(all)); len(got) != want {
			t.Fatalf("page %d has %d members, want %d", pages, len(got), want)
		}
		all = append(all, got...)
		after = got[len(got)-1]
	}
	for i, m := range all {
		if m != member(i) {
			t.Fatalf("member %d is %q, want %q (all: %q)", i, m, member(i), all)
		}
	}
	// After a member removed since the page before it was read: the next
	// page still starts right after where it was.
	check(t, s.ApplyRecords(ctx, "g", storage.RemoveFromIndex("ix", member(60))))
	mustSize(t, s, "g", "ix", n-1)
	if got := scan(t, s, "g", "ix", member(60), 3); !slices.Equal(got, []string{member(61), member(62), member(63)}) {
		t.Fatalf("ScanIndex after a removed member = %q", got)
	}
	if got := scan(t, s, "g", "ix", member(59), 2); !slices.Equal(got, []string{member(61), member(62)}) {
		t.Fatalf("ScanIndex across a removed member = %q", got)
	}
	// After something that never was a member: between two, and past the end.
	if got := scan(t, s, "g", "ix", "m0105", 2); !slices.Equal(got, []string{member(11), member(12)}) {
		t.Fatalf("ScanIndex after a non-member = %q", got)
	}
	if got := scan(t, s, "g", "ix", member(n-1), page); len(got) != 0 {
		t.Fatalf("ScanIndex after the last member = %q", got)
	}
	if got := scan(t, s, "g", "ix", "n", page); len(got) != 0 {
		t.Fatalf("ScanIndex past the end = %q", got)
	}
	// A limit of 0 (or less) is an empty page, not the whole index.
	if got := scan(t, s, "g", "ix", "", 0); len(got) != 0 {
		t.Fatalf("ScanIndex with limit 0 = %d members", len(got))
	}
	if got := scan(t, s, "g", "ix", "", -1); len(got) != 0 {
		t.Fatalf("ScanIndex with limit -1 = %d members", len(got))
	}
	// Of a missing index, and of a group never written.
	if got := scan(t, s, "g", "nope", "", page); len(got) != 0 {
		t.Fatalf("ScanIndex of a missing index = %q", got)
	}
	if got := scan(t, s, "never", "ix", "", page); len(got) != 0 {
		t.Fatalf("ScanIndex of a missing group = %q", got)
	}
	mustSize(t, s, "never", "ix", 0)

	// Byte order, not case or Unicode order; binary members survive, NUL
	// included, and a member that extends another sorts after it.
	odd := []string{"b", "B", "a", "a\x00", "ab", "\xff", "\x00", "é", "~", "a b", "[x", "(x", "-", "+"}
	var ops []storage.RecordOp
	for _, m := range odd {
		ops = append(ops, storage.AddToIndex("odd", m))
	}
	check(t, s.ApplyRecords(ctx, "g", ops...))
	mustList(t, s, "g", "odd", slices.Sorted(slices.Values(odd))...)
	if got := scan(t, s, "g", "odd", "a", 2); !slices.Equal(got, []string{"a\x00", "a b"}) {
		t.Fatalf("ScanIndex after %q = %q", "a", got)
	}
	// "" starts the first page, so an empty member is never on a page
	// (paging one at a time would otherwise return it for ever), but it
	// counts in the index's size.
	check(t, s.ApplyRecords(ctx, "g", storage.AddToIndex("withempty", ""), storage.AddToIndex("withempty", "x")))
	if got := scan(t, s, "g", "withempty", "", 10); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("ScanIndex of an index with an empty member = %q, want [x]", got)
	}
	mustSize(t, s, "g", "withempty", 2)
}

func testRecordsBinary(t *testing.T, h Harness) {
	s := h.Store
	bin := []byte{0, 1, 2, 0xff, 0xfe, '\n', '\r', '{', '}', ':', '%', '\'', '"', '\\', 0}
	names := []string{"a:b{c}", "%7B", "\x00", "n\x00ul", "\xff\xfe", "", " "}
	var ops []storage.RecordOp
	for i, n := range names {
		ops = append(ops, storage.Insert(n, append([]byte{byte(i)}, bin...)))
	}
	check(t, s.ApplyRecords(ctx, "bin{}", ops...))
	got := getRecords(t, s, "bin{}", names...)
	for i, n := range names {
		if want := append([]byte{byte(i)}, bin...); !bytes.Equal(got[i], want) {
			t.Fatalf("record %q = %q, want %q", n, got[i], want)
		}
	}
	// Expect compares the bytes exactly, NULs and all.
	check(t, s.ApplyRecords(ctx, "bin{}", storage.Expect("\x00", append([]byte{2}, bin...))))
	mustFailOn(t, s.ApplyRecords(ctx, "bin{}", storage.Expect("\x00", append([]byte{2}, bin[:len(bin)-1]...))), "\x00", storage.ErrAlreadyExists)

	// An empty value is a present record that reads back empty, not nil,
	// whether it was inserted, put, or put over a longer one.
	check(t, s.ApplyRecords(ctx, "g",
		storage.Insert("inserted", []byte{}),
		storage.Set("put", []byte{}),
		storage.Set("overwritten", []byte("long"))))
	check(t, s.ApplyRecords(ctx, "g", storage.Set("overwritten", []byte{})))
	vals := getRecords(t, s, "g", "inserted", "put", "overwritten", "absent")
	for i, name := range []string{"inserted", "put", "overwritten"} {
		if vals[i] == nil || len(vals[i]) != 0 {
			t.Fatalf("record %q = %#v, want a non-nil empty value", name, vals[i])
		}
	}
	if vals[3] != nil {
		t.Fatalf("absent record = %#v, want nil", vals[3])
	}
	// A nil value is stored as an empty one.
	check(t, s.ApplyRecords(ctx, "g", storage.Insert("nil", nil)))
	if v := getRecords(t, s, "g", "nil")[0]; v == nil || len(v) != 0 {
		t.Fatalf("record put with a nil value = %#v, want a non-nil empty value", v)
	}
	// And an empty value can be replaced by one that is not.
	check(t, s.ApplyRecords(ctx, "g", storage.Expect("put", []byte{}), storage.Set("put", []byte("now"))))
	mustHold(t, s, "g", "put", []byte("now"))
}

// testRecordsAllOrNothing: a batch that changes records and several
// indexes and fails on its last precondition leaves no trace in any of them.
func testRecordsAllOrNothing(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "org",
		storage.Insert("user:1", []byte("alice")),
		storage.Insert("name:alice", []byte("1")),
		storage.AddToIndex("users", "1"),
		storage.AddToIndex("names", "alice")))
	rename := func(from, to string, expect []byte) error {
		return s.ApplyRecords(ctx, "org",
			storage.Set("user:1", []byte(to)),
			storage.Remove("name:"+from),
			storage.RemoveFromIndex("names", from),
			storage.AddToIndex("names", to),
			storage.AddToIndex("renamed", "1"),
			storage.Insert("name:"+to, []byte("1")),
			storage.Expect("user:1", expect))
	}
	mustFailOn(t, rename("alice", "alicia", []byte("stale")), "user:1", storage.ErrAlreadyExists)
	mustHold(t, s, "org", "user:1", []byte("alice"))
	mustHold(t, s, "org", "name:alice", []byte("1"))
	mustBeAbsent(t, s, "org", "name:alicia")
	mustList(t, s, "org", "names", "alice")
	mustList(t, s, "org", "users", "1")
	mustList(t, s, "org", "renamed")
	// The same batch with what is there now lands whole.
	check(t, rename("alice", "alicia", []byte("alice")))
	mustHold(t, s, "org", "user:1", []byte("alicia"))
	mustHold(t, s, "org", "name:alicia", []byte("1"))
	mustBeAbsent(t, s, "org", "name:alice")
	mustList(t, s, "org", "names", "alicia")
	mustList(t, s, "org", "renamed", "1")
}

// testRecordsUniqueOneWinner: many sign-ups race for one username, each
// with a record and an index entry of its own; exactly one lands, and
// nothing of the losers does.
func testRecordsUniqueOneWinner(t *testing.T, h Harness) {
	s := h.Store
	errs := race(func(i int) error {
		id := strconv.Itoa(i)
		return s.ApplyRecords(ctx, "people",
			storage.Insert("user:"+id, []byte("alice")),
			storage.AddToIndex("users", id),
			storage.Insert("name:alice", []byte(id)))
	})
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("goroutines %d and %d both took the name", winner, i)
			}
			winner = i
			continue
		}
		mustFailOn(t, err, "name:alice", storage.ErrAlreadyExists)
	}
	if winner < 0 {
		t.Fatal("nobody took the name")
	}
	id := strconv.Itoa(winner)
	mustHold(t, s, "people", "name:alice", []byte(id))
	mustList(t, s, "people", "users", id)
	for i := range racers {
		if i != winner {
			mustBeAbsent(t, s, "people", "user:"+strconv.Itoa(i))
		}
	}
	mustHold(t, s, "people", "user:"+id, []byte("alice"))
}

// testRecordsExpectNoLostWrites: read-modify-write by Expect and retry.
// Many goroutines increment one counter record (absent at first, so the
// first write is an Insert) while also adding to an index; no increment is
// lost and none counts twice.
func testRecordsExpectNoLostWrites(t *testing.T, h Harness) {
	s := h.Store
	const each = 5
	incr := func(i, k int) error {
		for tries := 0; tries < 10000; tries++ {
			got, err := s.GetRecords(ctx, "g", "counter")
			if err != nil {
				return err
			}
			old := got[0]
			var guard storage.RecordOp
			n := 0
			if old == nil {
				guard = storage.Insert("counter", []byte("0"))
			} else {
				if n, err = strconv.Atoi(string(old)); err != nil {
					return err
				}
				guard = storage.Expect("counter", old)
			}
			next := []byte(strconv.Itoa(n + 1))
			ops := []storage.RecordOp{
				storage.AddToIndex("increments", fmt.Sprintf("%02d:%d", i, k)),
				guard,
				storage.Set("counter", next),
			}
			err = s.ApplyRecords(ctx, "g", ops...)
			var re *storage.RecordError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &re) && re.Name == "counter":
				continue // someone else incremented it since: read again
			default:
				return err
			}
		}
		return errors.New("no increment landed in 10000 tries")
	}
	for _, err := range race(func(i int) error {
		for k := range each {
			if err := incr(i, k); err != nil {
				return err
			}
		}
		return nil
	}) {
		check(t, err)
	}
	mustHold(t, s, "g", "counter", []byte(strconv.Itoa(racers*each)))
	mustSize(t, s, "g", "increments", racers*each)
}

// follow is one Follow, failing the test on an error.
func follow(t *testing.T, s storage.Records, group, name, prefix string) (entry, record []byte) {
	t.Helper()
	entry, record, err := s.Follow(ctx, group, name, prefix)
	check(t, err)
	return entry, record
}

// testRecordsFollow: an entry and the record it names, read together; each
// absent part reads as nil, an empty one as empty.
func testRecordsFollow(t *testing.T, h Harness) {
	s := h.Store
	if e, r := follow(t, s, "people", "username:alice", "user:"); e != nil || r != nil {
		t.Fatalf("Follow in a group never written = %q, %q", e, r)
	}
	check(t, s.ApplyRecords(ctx, "people",
		storage.Insert("user:1", []byte("alice's record")),
		storage.Insert("username:alice", []byte("1")),
		storage.Insert("username:ghost", []byte("2")),
		storage.Insert("username:blank", []byte("3")),
		storage.Insert("user:3", []byte{}),
		storage.Insert("username:", []byte{}),
		storage.Insert("user:", []byte("no id")),
		storage.Insert("user:\x00\xff", []byte("binary")),
		storage.Insert("username:bin", []byte("\x00\xff"))))
	check(t, s.ApplyRecords(ctx, "other", storage.Insert("user:1", []byte("not alice"))))
	for _, tc := range []struct {
		name          string
		entry, record []byte
	}{
		{"username:alice", []byte("1"), []byte("alice's record")},
		{"username:ghost", []byte("2"), nil},
		{"username:blank", []byte("3"), []byte{}},
		{"username:", []byte{}, []byte("no id")},
		{"username:bin", []byte("\x00\xff"), []byte("binary")},
		{"username:nobody", nil, nil},
	} {
		e, r := follow(t, s, "people", tc.name, "user:")
		if (e == nil) != (tc.entry == nil) || !bytes.Equal(e, tc.entry) || (r == nil) != (tc.record == nil) || !bytes.Equal(r, tc.record) {
			t.Fatalf("Follow(%q) = %q, %q; want %q, %q", tc.name, e, r, tc.entry, tc.record)
		}
	}
	// The record is the group's, and the caller's copy is its own.
	e, r := follow(t, s, "people", "username:alice", "user:")
	e[0], r[0] = 'X', 'X'
	if e, r := follow(t, s, "other", "username:alice", "user:"); e != nil || r != nil {
		t.Fatalf("Follow in another group = %q, %q", e, r)
	}
	if e, r := follow(t, s, "people", "username:alice", "user:"); string(e) != "1" || string(r) != "alice's record" {
		t.Fatalf("Follow after changing its result = %q, %q", e, r)
	}

	res := batch(t, h,
		storage.FollowOp("people", "username:alice", "user:"),
		storage.IncrOp("n", "k", time.Minute),
		storage.FollowOp("people", "username:ghost", "user:"),
		storage.FollowOp("people", "username:nobody", "user:"),
		storage.FollowOp("other", "username:alice", "user:"))
	for i, want := range [][2][]byte{{[]byte("1"), []byte("alice's record")}, {}, {[]byte("2"), nil}, {nil, nil}, {nil, nil}} {
		if i == 1 {
			continue
		}
		mustOK(t, "follow", res[i])
		v := res[i].Values
		if len(v) != 2 || (v[0] == nil) != (want[0] == nil) || !bytes.Equal(v[0], want[0]) || (v[1] == nil) != (want[1] == nil) || !bytes.Equal(v[1], want[1]) {
			t.Fatalf("batched Follow %d = %q, want %q", i, v, want)
		}
	}
}

// testRecordsFollowConsistent: while the entry moves from record to record,
// and each move deletes the record it left, Follow always finds the record
// the entry names; two reads one after the other would sometimes find the
// entry's old record gone.
func testRecordsFollowConsistent(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "people", storage.Insert("user:0", []byte("v0")), storage.Insert("username:alice", []byte("0"))))
	const moves = 200
	b := batcher(t, h)
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= moves; i++ {
			id, old := strconv.Itoa(i), strconv.Itoa(i-1)
			if err := s.ApplyRecords(ctx, "people",
				storage.Insert("user:"+id, []byte("v"+id)),
				storage.Expect("username:alice", []byte(old)),
				storage.Set("username:alice", []byte(id)),
				storage.Remove("user:"+old)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	errs := race(func(i int) error {
		for range moves / 4 {
			var e, r []byte
			var err error
			if i%2 == 0 {
				e, r, err = s.Follow(ctx, "people", "username:alice", "user:")
			} else {
				var res []storage.BatchResult
				if res, err = b.Batch(ctx, storage.FollowOp("people", "username:alice", "user:")); err == nil {
					e, r, err = res[0].Values[0], res[0].Values[1], res[0].Err
				}
			}
			if err != nil {
				return err
			}
			if r == nil || string(r) != "v"+string(e) {
				return fmt.Errorf("Follow = %q, %q: not the record the entry names", e, r)
			}
		}
		return nil
	})
	check(t, <-done)
	for _, err := range errs {
		check(t, err)
	}
}

package storetest

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// batcher is the harness's store as a Batcher: every backend is one.
func batcher(t *testing.T, h Harness) storage.Batcher {
	t.Helper()
	b, ok := h.Store.(storage.Batcher)
	if !ok {
		t.Fatalf("%T does not implement storage.Batcher", h.Store)
	}
	return b
}

// batch runs ops and fails the test on a failure of the backend.
func batch(t *testing.T, h Harness, ops ...storage.BatchOp) []storage.BatchResult {
	t.Helper()
	res, err := batcher(t, h).Batch(ctx, ops...)
	check(t, err)
	if len(res) != len(ops) {
		t.Fatalf("Batch: %d results for %d ops", len(res), len(ops))
	}
	return res
}

func mustOK(t *testing.T, what string, r storage.BatchResult) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("%s: %v", what, r.Err)
	}
}

func mustFail(t *testing.T, what string, r storage.BatchResult, want error) {
	t.Helper()
	if !errors.Is(r.Err, want) {
		t.Fatalf("%s: %v, want %v", what, r.Err, want)
	}
}

func testBatchEmpty(t *testing.T, h Harness) {
	if res := batch(t, h); len(res) != 0 {
		t.Fatalf("Batch() = %v, want no results", res)
	}
}

// testBatchKV: each KV op in a batch does what its single call does.
func testBatchKV(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.Put(ctx, "ns", "present", []byte("v"), 0))
	check(t, s.Put(ctx, "ns", "empty", []byte{}, 0))
	check(t, s.Put(ctx, "ns", "taken", []byte("first"), 0))
	check(t, s.Put(ctx, "ns", "take", []byte("t"), 0))
	check(t, s.Put(ctx, "ns", "gone", []byte("x"), 0))
	res := batch(t, h,
		storage.GetOp("ns", "present"),
		storage.GetOp("ns", "absent"),
		storage.GetOp("ns", "empty"),
		storage.PutOp("ns", "put", []byte("p"), time.Minute),
		storage.CreateOp("ns", "created", []byte("c"), time.Minute),
		storage.CreateOp("ns", "taken", []byte("second"), time.Minute),
		storage.TakeOp("ns", "take"),
		storage.TakeOp("ns", "never"),
		storage.DeleteOp("ns", "gone"),
		storage.DeleteOp("ns", "never"),
		storage.IncrOp("ns", "count", time.Minute),
	)
	for i, r := range res {
		if i != 5 {
			mustOK(t, fmt.Sprintf("op %d", i), r)
		}
	}
	if string(res[0].Value) != "v" || res[1].Value != nil || res[2].Value == nil || len(res[2].Value) != 0 {
		t.Fatalf("gets: %q, %q (want nil), %q (want empty, not nil)", res[0].Value, res[1].Value, res[2].Value)
	}
	mustGet(t, s, "ns", "put", "p")
	mustGet(t, s, "ns", "created", "c")
	mustFail(t, "Create of a taken key", res[5], storage.ErrAlreadyExists)
	mustGet(t, s, "ns", "taken", "first")
	if string(res[6].Value) != "t" || res[7].Value != nil {
		t.Fatalf("takes: %q, %q (want nil)", res[6].Value, res[7].Value)
	}
	mustBeMissing(t, s, "ns", "take")
	mustBeMissing(t, s, "ns", "gone")
	if res[10].N != 1 {
		t.Fatalf("Incr = %d, want 1", res[10].N)
	}
	n, err := s.Incr(ctx, "ns", "count", time.Minute)
	check(t, err)
	if n != 2 {
		t.Fatalf("Incr after the batch's = %d, want 2", n)
	}
}

// testBatchExpiry: a batch's Put, Create and Incr expire as their single
// calls do, and its Incr keeps a fixed window.
func testBatchExpiry(t *testing.T, h Harness) {
	s := h.Store
	batch(t, h, storage.PutOp("ns", "p", []byte("x"), short), storage.CreateOp("ns", "c", []byte("x"), short),
		storage.IncrOp("ns", "n", short), storage.PutOp("ns", "forever", []byte("z"), 0))
	h.Advance(short / 2)
	if r := batch(t, h, storage.IncrOp("ns", "n", short)); r[0].N != 2 {
		t.Fatalf("second Incr = %d, want 2", r[0].N)
	}
	h.Advance(short/2 + short/4)
	mustBeMissing(t, s, "ns", "p")
	mustBeMissing(t, s, "ns", "c")
	mustGet(t, s, "ns", "forever", "z")
	if r := batch(t, h, storage.IncrOp("ns", "n", short)); r[0].N != 1 {
		t.Fatalf("Incr after the window = %d, want 1 (a fresh window)", r[0].N)
	}
}

func testBatchSwap(t *testing.T, h Harness) {
	s := h.Store
	res := batch(t, h,
		storage.SwapOp("ns", "new", nil, []byte("1"), time.Minute),
		storage.SwapOp("ns", "absent", []byte("x"), []byte("1"), time.Minute),
	)
	mustOK(t, "Swap from absent", res[0])
	mustGet(t, s, "ns", "new", "1")
	mustFail(t, "Swap of an absent key from a value", res[1], storage.ErrNotFound)
	mustBeMissing(t, s, "ns", "absent")

	res = batch(t, h,
		storage.SwapOp("ns", "new", nil, []byte("2"), time.Minute),
		storage.SwapOp("ns", "new", []byte("0"), []byte("2"), time.Minute),
	)
	mustFail(t, "Swap from absent of a present key", res[0], storage.ErrAlreadyExists)
	mustFail(t, "Swap from another value", res[1], storage.ErrAlreadyExists)
	mustGet(t, s, "ns", "new", "1")

	mustOK(t, "Swap", batch(t, h, storage.SwapOp("ns", "new", []byte("1"), []byte("2"), short))[0])
	mustGet(t, s, "ns", "new", "2")
	h.Advance(short + short/2)
	mustBeMissing(t, s, "ns", "new")

	// An empty value is present: it is not the absence nil stands for.
	check(t, s.Put(ctx, "ns", "empty", []byte{}, 0))
	mustFail(t, "Swap from absent of an empty value", batch(t, h, storage.SwapOp("ns", "empty", nil, []byte("x"), 0))[0], storage.ErrAlreadyExists)
	mustOK(t, "Swap from empty", batch(t, h, storage.SwapOp("ns", "empty", []byte{}, []byte("x"), 0))[0])
	mustGet(t, s, "ns", "empty", "x")

	mustOK(t, "Swap to nil", batch(t, h, storage.SwapOp("ns", "empty", []byte("x"), nil, 0))[0])
	mustBeMissing(t, s, "ns", "empty")

	bin := []byte{0, 1, 255, '\n', '{'}
	check(t, s.Put(ctx, "ns", "bin", bin, 0))
	mustOK(t, "Swap of a binary value", batch(t, h, storage.SwapOp("ns", "bin", bin, append(bin, 0), 0))[0])
	mustGet(t, s, "ns", "bin", string(append(bin, 0)))
}

// testBatchRecordsAndFamilies: GetRecords and ApplyFamily in a batch, with
// KV ops of several namespaces, groups and families, which a Redis Cluster
// spreads over its nodes.
func testBatchRecordsAndFamilies(t *testing.T, h Harness) {
	s := h.Store
	check(t, s.ApplyRecords(ctx, "g1", storage.Set("a", []byte("A")), storage.Set("e", []byte{})))
	check(t, s.ApplyRecords(ctx, "g2", storage.Set("a", []byte("other"))))
	exp := h.Now().Add(time.Hour)
	check(t, s.ApplyFamily(ctx, "f1", exp, storage.Put("code:x", []byte("X"))))
	var ops []storage.BatchOp
	for i := range 40 {
		ops = append(ops, storage.PutOp("ns"+strconv.Itoa(i%5), "k"+strconv.Itoa(i), []byte(strconv.Itoa(i)), time.Minute))
	}
	ops = append(ops,
		storage.GetRecordsOp("g1", "a", "missing", "e"),
		storage.GetRecordsOp("g2", "a"),
		storage.GetRecordsOp("g3"),
		storage.ApplyFamilyOp("f1", exp, storage.Spend("code:x"), storage.Put("at:1", []byte("T"))),
		storage.ApplyFamilyOp("f2", exp, storage.Put("code:y", []byte("Y"))),
		storage.ApplyFamilyOp("f3", exp, storage.Spend("code:z")),
	)
	res := batch(t, h, ops...)
	for i := range 40 {
		mustOK(t, "put", res[i])
		mustGet(t, s, "ns"+strconv.Itoa(i%5), "k"+strconv.Itoa(i), strconv.Itoa(i))
	}
	rec := res[40:]
	if v := rec[0].Values; len(v) != 3 || string(v[0]) != "A" || v[1] != nil || v[2] == nil || len(v[2]) != 0 {
		t.Fatalf("GetRecords(g1) = %q", v)
	}
	if v := rec[1].Values; len(v) != 1 || string(v[0]) != "other" {
		t.Fatalf("GetRecords(g2) = %q", v)
	}
	if v := rec[2].Values; len(v) != 0 || rec[2].Err != nil {
		t.Fatalf("GetRecords of no names = %q, %v", v, rec[2].Err)
	}
	mustOK(t, "ApplyFamily", rec[3])
	mustOK(t, "ApplyFamily of a new family", rec[4])
	mustFail(t, "ApplyFamily spending what is absent", rec[5], storage.ErrNotFound)
	if f := load(t, s, "f1"); !f["code:x"].Spent || string(f["at:1"].Value) != "T" {
		t.Fatalf("family after the batch: %v", f)
	}
	if f := load(t, s, "f2"); string(f["code:y"].Value) != "Y" {
		t.Fatalf("new family after the batch: %v", f)
	}
	mustFail(t, "spending again", batch(t, h, storage.ApplyFamilyOp("f1", exp, storage.Spend("code:x")))[0], storage.ErrAlreadyExists)
}

// testBatchOneKeyInOrder: ops on one key run in the batch's order.
func testBatchOneKeyInOrder(t *testing.T, h Harness) {
	res := batch(t, h,
		storage.PutOp("ns", "k", []byte("1"), time.Minute),
		storage.GetOp("ns", "k"),
		storage.SwapOp("ns", "k", []byte("1"), []byte("2"), time.Minute),
		storage.GetOp("ns", "k"),
		storage.DeleteOp("ns", "k"),
		storage.GetOp("ns", "k"),
		storage.IncrOp("ns", "n", time.Minute),
		storage.IncrOp("ns", "n", time.Minute),
	)
	mustOK(t, "swap", res[2])
	if string(res[1].Value) != "1" || string(res[3].Value) != "2" || res[5].Value != nil || res[6].N != 1 || res[7].N != 2 {
		t.Fatalf("in one batch: %q %q %q %d %d", res[1].Value, res[3].Value, res[5].Value, res[6].N, res[7].N)
	}
}

// testConcurrentSwap: of several Swaps from one read, exactly one wins;
// what makes a read-modify-write through Batch single-use.
func testConcurrentSwap(t *testing.T, h Harness) {
	check(t, h.Store.Put(ctx, "ns", "k", []byte("0"), time.Minute))
	errs := race(func(i int) error {
		res, err := batcher(t, h).Batch(ctx, storage.SwapOp("ns", "k", []byte("0"), []byte(strconv.Itoa(i+1)), time.Minute))
		if err != nil {
			return err
		}
		return res[0].Err
	})
	oneWinner(t, errs, storage.ErrAlreadyExists)
}

// testConcurrentBatchIncr: increments in batches, alongside single ones,
// are not lost.
func testConcurrentBatchIncr(t *testing.T, h Harness) {
	errs := race(func(i int) error {
		if i%2 == 0 {
			_, err := h.Store.Incr(ctx, "ns", "n", time.Minute)
			return err
		}
		_, err := batcher(t, h).Batch(ctx, storage.IncrOp("ns", "n", time.Minute), storage.GetOp("ns", "other"))
		return err
	})
	for _, err := range errs {
		check(t, err)
	}
	n, err := h.Store.Incr(ctx, "ns", "n", time.Minute)
	check(t, err)
	if n != racers+1 {
		t.Fatalf("Incr = %d, want %d", n, racers+1)
	}
}

// testConcurrentBatchSpend: a code spent from batches is spent once.
func testConcurrentBatchSpend(t *testing.T, h Harness) {
	exp := h.Now().Add(time.Hour)
	check(t, h.Store.ApplyFamily(ctx, "f", exp, storage.Put("code:a", []byte("A"))))
	errs := race(func(i int) error {
		res, err := batcher(t, h).Batch(ctx, storage.ApplyFamilyOp("f", exp, storage.Spend("code:a"),
			storage.Put(fmt.Sprintf("at:%d", i), []byte("T"))))
		if err != nil {
			return err
		}
		return res[0].Err
	})
	oneWinner(t, errs, storage.ErrAlreadyExists)
	if n := len(load(t, h.Store, "f")); n != 2 {
		t.Fatalf("%d records after one code's spends, want the code and one token", n)
	}
}

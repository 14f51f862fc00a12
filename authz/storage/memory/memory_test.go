package memory

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/storetest"
)

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		clk := newTestClock()
		return storetest.Harness{Store: New(Config{Now: clk.Now}), Now: clk.Now, Advance: clk.Advance}
	})
}

// held is how many entries and families the store holds, expired or not.
func (s *Store) held() (kv, families int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.kv), len(s.families)
}

// TestSweepFreesWhatExpiresUnread: entries and families that expire and
// are never read again are freed by a later write of anything, whichever
// kind of write it is; what has not expired stays.
func TestSweepFreesWhatExpiresUnread(t *testing.T) {
	ctx := context.Background()
	writes := map[string]func(*Store) error{
		"put":    func(s *Store) error { return s.Put(ctx, "other", "k", []byte("v"), 0) },
		"create": func(s *Store) error { return s.Create(ctx, "other", "k", []byte("v"), 0) },
		"incr": func(s *Store) error {
			_, err := s.Incr(ctx, "other", "k", 0)
			return err
		},
		"update": func(s *Store) error {
			return s.Update(ctx, "other", "k", 0, func([]byte) ([]byte, error) { return []byte("v"), nil })
		},
		"apply-family": func(s *Store) error {
			return s.ApplyFamily(ctx, "other", s.now().Add(time.Hour), storage.Put("k", []byte("v")))
		},
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			clk := newTestClock()
			s := New(Config{Now: clk.Now})
			for i := range 1000 {
				if err := s.Put(ctx, "authorize", strconv.Itoa(i), make([]byte, 1024), time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			_, _ = s.Incr(ctx, "limit", "addr", time.Minute)
			for i := range 50 {
				if err := s.ApplyFamily(ctx, "short"+strconv.Itoa(i), clk.Now().Add(time.Minute), storage.Put("code", []byte("c"))); err != nil {
					t.Fatal(err)
				}
			}
			// What must survive: no expiry, a later expiry, a later family.
			_ = s.Put(ctx, "keys", "signing", []byte("k"), 0)
			_ = s.Put(ctx, "session", "long", []byte("s"), time.Hour)
			_ = s.ApplyFamily(ctx, "long", clk.Now().Add(time.Hour), storage.Put("code", []byte("c")))
			if kv, fam := s.held(); kv != 1003 || fam != 51 {
				t.Fatalf("before expiry the store holds %d entries and %d families, want 1003 and 51", kv, fam)
			}

			clk.Advance(2 * time.Minute)
			if err := write(s); err != nil {
				t.Fatal(err)
			}
			kv, fam := s.held()
			wantKV, wantFam := 2, 1
			if name == "apply-family" {
				wantFam++
			} else {
				wantKV++
			}
			if kv != wantKV || fam != wantFam {
				t.Fatalf("after expiry and one write the store holds %d entries and %d families, want %d and %d", kv, fam, wantKV, wantFam)
			}
			if _, err := s.Get(ctx, "session", "long"); err != nil {
				t.Errorf("an unexpired entry was swept: %v", err)
			}
			if _, err := s.Get(ctx, "keys", "signing"); err != nil {
				t.Errorf("an entry without expiry was swept: %v", err)
			}
			if _, err := s.LoadFamily(ctx, "long"); err != nil {
				t.Errorf("an unexpired family was swept: %v", err)
			}
		})
	}
}

// TestSweepIsAmortized: a sweep walks the whole store, so writes run one at
// most once a sweepEvery, not on every write.
func TestSweepIsAmortized(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	s := New(Config{Now: clk.Now})
	_ = s.Put(ctx, "ns", "first", nil, 0) // sweeps the empty store
	_ = s.Put(ctx, "ns", "short", nil, time.Second)
	clk.Advance(sweepEvery / 2)
	_ = s.Put(ctx, "ns", "write", nil, 0)
	if kv, _ := s.held(); kv != 3 {
		t.Fatalf("a write within sweepEvery of the last sweep swept: %d entries, want 3", kv)
	}
	clk.Advance(sweepEvery / 2)
	_ = s.Put(ctx, "ns", "write", nil, 0)
	if kv, _ := s.held(); kv != 2 {
		t.Fatalf("a write sweepEvery after the last sweep did not sweep: %d entries, want 2", kv)
	}
	// A clock set back does not postpone the next sweep by as much.
	clk.Advance(-24 * time.Hour)
	_ = s.Put(ctx, "ns", "short", nil, time.Second)
	clk.Advance(2 * sweepEvery)
	_ = s.Put(ctx, "ns", "write", nil, 0)
	if kv, _ := s.held(); kv != 2 {
		t.Fatalf("after the clock went back, a later write did not sweep: %d entries, want 2", kv)
	}
}

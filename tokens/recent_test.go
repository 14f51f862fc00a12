package tokens

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

func TestRecent(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	sum := func(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

	var none Recent[string]
	none.Put(sum("a"), "x", now.Add(time.Minute), now)
	if _, ok := none.Get(sum("a"), now); ok {
		t.Error("the zero value remembered")
	}

	r := Recent[string]{Size: 4}
	r.Put(sum("a"), "x", now.Add(time.Minute), now)
	if v, ok := r.Get(sum("a"), now.Add(59*time.Second)); !ok || v != "x" {
		t.Errorf("within its time: %q %v", v, ok)
	}
	if _, ok := r.Get(sum("a"), now.Add(time.Minute)); ok {
		t.Error("remembered at its time")
	}
	if _, ok := r.Get(sum("b"), now); ok {
		t.Error("another token's sum found something")
	}
	r.Put(sum("late"), "y", now, now)
	if _, ok := r.Get(sum("late"), now); ok {
		t.Error("remembered what was already past its time")
	}
	for i := range 100 {
		r.Put(sum(fmt.Sprint(i)), "v", now.Add(time.Minute), now)
		if n := len(r.m); n > r.Size {
			t.Fatalf("%d entries, bound %d", n, r.Size)
		}
	}
	if _, ok := r.Get(sum("99"), now); !ok {
		t.Error("the newest entry was dropped")
	}
}

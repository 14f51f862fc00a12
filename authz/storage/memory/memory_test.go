package memory_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz/storage/memory"
	"github.com/stepup-dev/stepup/authz/storage/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		var mu sync.Mutex
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		return storetest.Harness{
			Store:   memory.New(memory.Config{Now: clock}),
			Now:     clock,
			Advance: func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() },
		}
	})
}

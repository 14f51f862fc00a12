package tokens

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Recent remembers what checking a token found, by SHA-256 of the token,
// until a time the caller sets. A token is sent again and again (one per
// session's requests), and checking its signature costs more than
// everything else a request does; a hash and a map lookup cost a
// microsecond. Only what only gets truer with time may be remembered: a
// signature that verified (until its key could have been withdrawn), never
// an expiry. It is safe for concurrent use; the zero value remembers
// nothing.
type Recent[V any] struct {
	// Size bounds the entries; 0 or less remembers none.
	Size int

	mu sync.Mutex
	m  map[[sha256.Size]byte]recentEntry[V]
}

type recentEntry[V any] struct {
	v     V
	until time.Time
}

// Get returns what was remembered of the token with this sum, if it is
// still before its time.
func (r *Recent[V]) Get(sum [sha256.Size]byte, now time.Time) (V, bool) {
	r.mu.Lock()
	e, ok := r.m[sum]
	r.mu.Unlock()
	if !ok || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put remembers v for the token with this sum until then.
func (r *Recent[V]) Put(sum [sha256.Size]byte, v V, until, now time.Time) {
	if r.Size <= 0 || !now.Before(until) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[[sha256.Size]byte]recentEntry[V]{}
	}
	if len(r.m) >= r.Size {
		// Full: drop what has lapsed, or else any entries (map order is
		// random enough for a cache that only saves work) until it is
		// no longer full, going on through what has lapsed down to half.
		for k, e := range r.m {
			if !now.Before(e.until) || len(r.m) >= r.Size {
				delete(r.m, k)
			}
			if len(r.m) < r.Size/2 {
				break
			}
		}
	}
	r.m[sum] = recentEntry[V]{v: v, until: until}
}

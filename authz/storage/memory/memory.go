// Package memory is the embedded default store: everything in this process,
// gone when it exits. It is what `stepupd --dev` runs on and what most tests
// use; it keeps exactly the semantics of the Redis store.
package memory

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// Config configures a Store. The zero value is ready to use.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type item struct {
	value   []byte
	expires time.Time // zero: never
}

type family struct {
	entries map[string]storage.Entry
	expires time.Time
}

// Store keeps state in maps behind one mutex; the lock makes every
// operation atomic, which is all the storage contract asks.
type Store struct {
	now func() time.Time

	mu       sync.Mutex
	kv       map[string]item
	families map[string]*family
	groups   map[string]*group
	// nextSweep is when a write next frees what has expired.
	nextSweep time.Time
}

// sweepEvery is how often, by the store's clock, writes free expired
// entries. Reads drop an expired entry they meet, but most expire unread
// (a sign-in nobody finished, a counter whose window ended, a grant whose
// tokens were never refreshed), and without a sweep they would stay until
// the process exits. Sweeping from writes needs no goroutine to stop, and
// the store only grows through writes.
const sweepEvery = time.Minute

var _ storage.Store = (*Store)(nil)

func New(cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{now: cfg.Now, kv: map[string]item{}, families: map[string]*family{}, groups: map[string]*group{}}
}

func kvKey(ns, key string) string { return ns + "\x00" + key }

func expiry(now time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return now.Add(ttl)
}

// live returns the item if present and unexpired, dropping it if expired.
// Callers hold mu.
func (s *Store) live(k string) (item, bool) {
	it, ok := s.kv[k]
	if !ok {
		return item{}, false
	}
	if expired(it.expires, s.now()) {
		delete(s.kv, k)
		return item{}, false
	}
	return it, true
}

func expired(expires, now time.Time) bool { return !expires.IsZero() && !now.Before(expires) }

// sweep frees every expired entry and family, at most once a sweepEvery:
// the pass walks the whole store under the lock, and once a minute its
// cost, spread over that minute's writes, stays small. Callers hold mu.
func (s *Store) sweep() {
	now := s.now()
	// A clock set back would otherwise put the next sweep far off.
	if now.Before(s.nextSweep) && s.nextSweep.Sub(now) <= sweepEvery {
		return
	}
	s.nextSweep = now.Add(sweepEvery)
	for k, it := range s.kv {
		if expired(it.expires, now) {
			delete(s.kv, k)
		}
	}
	for name, f := range s.families {
		if !now.Before(f.expires) {
			delete(s.families, name)
		}
	}
}

func (s *Store) Get(_ context.Context, ns, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.live(kvKey(ns, key))
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(it.value), nil
}

func (s *Store) GetMany(_ context.Context, ns string, keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, key := range keys {
		if it, ok := s.live(kvKey(ns, key)); ok {
			out[i] = append([]byte{}, it.value...) // present: never nil, even when empty
		}
	}
	return out, nil
}

func (s *Store) Put(_ context.Context, ns, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	s.kv[kvKey(ns, key)] = item{value: bytes.Clone(value), expires: expiry(s.now(), ttl)}
	return nil
}

func (s *Store) Create(_ context.Context, ns, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	k := kvKey(ns, key)
	if _, ok := s.live(k); ok {
		return storage.ErrAlreadyExists
	}
	s.kv[k] = item{value: bytes.Clone(value), expires: expiry(s.now(), ttl)}
	return nil
}

func (s *Store) Take(_ context.Context, ns, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := kvKey(ns, key)
	it, ok := s.live(k)
	if !ok {
		return nil, storage.ErrNotFound
	}
	delete(s.kv, k)
	return it.value, nil
}

func (s *Store) Delete(_ context.Context, ns, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.kv, kvKey(ns, key))
	return nil
}

func (s *Store) Incr(_ context.Context, ns, key string, window time.Duration) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	k := kvKey(ns, key)
	it, ok := s.live(k)
	if !ok {
		it = item{value: []byte("0"), expires: expiry(s.now(), window)}
	}
	n, err := strconv.ParseInt(string(it.value), 10, 64)
	if err != nil {
		return 0, err
	}
	n++
	it.value = []byte(strconv.FormatInt(n, 10))
	s.kv[k] = it
	return n, nil
}

func (s *Store) Update(_ context.Context, ns, key string, ttl time.Duration, fn func([]byte) ([]byte, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	k := kvKey(ns, key)
	var old []byte
	if it, ok := s.live(k); ok {
		old = bytes.Clone(it.value)
	}
	v, err := fn(old)
	if err != nil {
		return err
	}
	if v == nil {
		delete(s.kv, k)
		return nil
	}
	s.kv[k] = item{value: bytes.Clone(v), expires: expiry(s.now(), ttl)}
	return nil
}

func (s *Store) LoadFamily(_ context.Context, name string) (map[string]storage.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.liveFamily(name)
	if f == nil || len(f.entries) == 0 {
		return nil, storage.ErrNotFound
	}
	out := make(map[string]storage.Entry, len(f.entries))
	for k, e := range f.entries {
		out[k] = storage.Entry{Value: bytes.Clone(e.Value), Spent: e.Spent}
	}
	return out, nil
}

func (s *Store) liveFamily(name string) *family {
	f := s.families[name]
	if f != nil && !s.now().Before(f.expires) {
		delete(s.families, name)
		return nil
	}
	return f
}

func (s *Store) ApplyFamily(_ context.Context, name string, expiresAt time.Time, ops ...storage.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	f := s.liveFamily(name)
	if f == nil {
		f = &family{entries: map[string]storage.Entry{}}
	}
	for _, op := range ops {
		if op.Kind != storage.OpSpend {
			continue
		}
		e, ok := f.entries[op.Name]
		switch {
		case !ok:
			return storage.ErrNotFound
		case e.Spent:
			return storage.ErrAlreadyExists
		}
	}
	for _, op := range ops {
		switch op.Kind {
		case storage.OpPut:
			f.entries[op.Name] = storage.Entry{Value: bytes.Clone(op.Value)}
		case storage.OpSpend:
			e := f.entries[op.Name]
			e.Spent = true
			f.entries[op.Name] = e
		case storage.OpDelete:
			delete(f.entries, op.Name)
		case storage.OpDeletePrefix, storage.OpSpendPrefix:
			for k, e := range f.entries {
				if !strings.HasPrefix(k, op.Name) {
					continue
				}
				if op.Kind == storage.OpDeletePrefix {
					delete(f.entries, k)
				} else {
					e.Spent = true
					f.entries[k] = e
				}
			}
		}
	}
	if expiresAt.After(f.expires) {
		f.expires = expiresAt
	}
	if len(f.entries) == 0 {
		delete(s.families, name)
	} else {
		s.families[name] = f
	}
	return nil
}

func (s *Store) Ping(context.Context) error { return nil }
func (s *Store) Close() error               { return nil }

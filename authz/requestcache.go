package authz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// A login is several HTTP requests, and each of them used to read the same
// things more than once (the person, once for the session and once for the
// step; the enrollment, for the factors epoch and for the step) and to read
// one by one what it could have read at once. A request cache is one
// request's view of the store, kept in its context, like the grant
// snapshot of the token endpoint (grants.go):
//
//   - what the request read or wrote, it reads again from the cache;
//   - what it knows it will read soon (prefetch), and the writes that can
//     wait (later), go with its next round trip, as one Batch;
//   - Update becomes a read (often already made) and a compare-and-swap.
//
// Nothing outlives the request, and a request without a cache (every
// handler that does not ask for one) reaches the store as before. The
// cache never answers for a write: every write goes to the store, and a
// single-use guard (Create, Take, Incr, a Swap) is decided there.
//
// requestStore is the server's store, in front of every component; it
// looks for the cache in each call's context.
type requestStore struct {
	storage.Store
	// batcher is the store's Batch, or nil when it has none (a wrapper):
	// then queued operations go one call each, in order.
	batcher storage.Batcher
}

// cachedPerRequest puts a requestStore in front of st.
func cachedPerRequest(st storage.Store) storage.Store {
	b, _ := st.(storage.Batcher)
	return &requestStore{Store: st, batcher: b}
}

type requestCacheKey struct{}

// requestCache is what one request has read, and what it has queued.
type requestCache struct {
	st *requestStore

	mu     sync.Mutex
	known  map[cacheName]cachedValue
	queued []*queuedOp
}

// cacheName is a KV key (kind 'k': namespace and key) or a record (kind
// 'r': group and name).
type cacheName struct {
	kind        byte
	space, name string
}

type cachedValue struct {
	value   []byte
	present bool
}

// queuedOp is an operation waiting for the request's next round trip.
type queuedOp struct {
	op storage.BatchOp
	// bestEffort ops (a throttle counter cleared) are sent at the end of
	// the request if nothing took them sooner; the others (a session's
	// write) only when their outcome is asked for, or with another call.
	bestEffort bool
	// done is closed once res is set.
	done chan struct{}
	res  storage.BatchResult
}

func newQueued(op storage.BatchOp, bestEffort bool) *queuedOp {
	return &queuedOp{op: op, bestEffort: bestEffort, done: make(chan struct{})}
}

// withRequestCache gives r a request cache, if the server's store can
// have one. done sends what best-effort writes are still queued.
func (s *Server) withRequestCache(r *http.Request) (_ *http.Request, done func()) {
	rs, ok := s.store.(*requestStore)
	if !ok || cacheOf(r.Context()) != nil {
		return r, func() {}
	}
	c := &requestCache{st: rs, known: map[cacheName]cachedValue{}}
	ctx := context.WithValue(r.Context(), requestCacheKey{}, c)
	return r.WithContext(ctx), func() { c.finish(ctx) }
}

func cacheOf(ctx context.Context) *requestCache {
	c, _ := ctx.Value(requestCacheKey{}).(*requestCache)
	return c
}

// prefetch reads KV keys with the request's next round trip, so that the
// reads after it find them. Without a cache it does nothing: the reads
// happen when they are made.
func prefetch(ctx context.Context, ns string, keys ...string) {
	c := cacheOf(ctx)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, key := range keys {
		if _, ok := c.known[cacheName{'k', ns, key}]; !ok && !c.queuedRead(ns, key) {
			c.queued = append(c.queued, newQueued(storage.GetOp(ns, key), false))
		}
	}
}

// queuedRead reports whether a read of the key is queued. c.mu is held.
func (c *requestCache) queuedRead(ns, key string) bool {
	for _, q := range c.queued {
		if q.op.Kind == storage.BatchGet && q.op.NS == ns && q.op.Key == key {
			return true
		}
	}
	return false
}

// later sends a write with the request's next round trip, or now for a
// request without a cache, through kv; its outcome is the returned op's.
// Only writes that nothing after them in the request reads through
// another path may wait.
func later(ctx context.Context, kv storage.KV, op storage.BatchOp, bestEffort bool) *queuedOp {
	q := newQueued(op, bestEffort)
	c := cacheOf(ctx)
	if c == nil {
		q.res = single(ctx, kv, op)
		close(q.done)
		return q
	}
	c.mu.Lock()
	// Until it goes, the key is not known: a read of it goes with it, after.
	delete(c.known, nameOf(op))
	c.queued = append(c.queued, q)
	c.mu.Unlock()
	return q
}

// outcome is what the op gave, sending it (and whatever else is queued)
// now if it has not gone yet.
func (q *queuedOp) outcome(ctx context.Context) storage.BatchResult {
	if c := cacheOf(ctx); c != nil && c.waiting(q) {
		c.run(ctx)
	}
	<-q.done
	return q.res
}

// waiting reports whether q is still queued, not taken by a round trip.
func (c *requestCache) waiting(q *queuedOp) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.queued {
		if w == q {
			return true
		}
	}
	return false
}

// finish sends the best-effort writes still queued and drops the rest: a
// read nobody made, or a write whose outcome nobody asked for (a session
// the request ended without confirming).
func (c *requestCache) finish(ctx context.Context) {
	c.mu.Lock()
	var keep []*queuedOp
	for _, q := range c.queued {
		if q.bestEffort {
			keep = append(keep, q)
		} else {
			q.res.Err = errDropped
			close(q.done)
		}
	}
	c.queued = keep
	c.mu.Unlock()
	if len(keep) > 0 {
		c.run(context.WithoutCancel(ctx))
	}
}

// run sends the queued operations and then ops, in one round trip where
// the store can, and returns ops' results.
func (c *requestCache) run(ctx context.Context, ops ...storage.BatchOp) []storage.BatchResult {
	c.mu.Lock()
	queued := c.queued
	c.queued = nil
	c.mu.Unlock()
	all := make([]storage.BatchOp, 0, len(queued)+len(ops))
	for _, q := range queued {
		all = append(all, q.op)
	}
	all = append(all, ops...)
	if len(all) == 0 {
		return nil
	}
	var res []storage.BatchResult
	if c.st.batcher != nil {
		var err error
		if res, err = c.st.batcher.Batch(ctx, all...); err != nil && len(res) != len(all) {
			res = make([]storage.BatchResult, len(all))
			for i := range res {
				res[i].Err = err
			}
		}
	} else {
		res = make([]storage.BatchResult, len(all))
		for i, op := range all {
			res[i] = single(ctx, c.st.Store, op)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, op := range all {
		c.learn(op, res[i])
	}
	for i, q := range queued {
		q.res = res[i]
		close(q.done)
	}
	return res[len(queued):]
}

// learn keeps what an op tells about its key. c.mu is held.
func (c *requestCache) learn(op storage.BatchOp, r storage.BatchResult) {
	name := nameOf(op)
	switch op.Kind {
	case storage.BatchGetRecords:
		if r.Err == nil {
			for i, n := range op.Names {
				c.known[cacheName{'r', op.Group, n}] = cachedValue{value: r.Values[i], present: r.Values[i] != nil}
			}
		}
		return
	case storage.BatchFollow:
		if r.Err == nil {
			entry := r.Values[0]
			c.known[cacheName{'r', op.Group, op.Names[0]}] = cachedValue{value: entry, present: entry != nil}
			if entry != nil {
				c.known[cacheName{'r', op.Group, op.Prefix + string(entry)}] = cachedValue{value: r.Values[1], present: r.Values[1] != nil}
			}
		}
		return
	case storage.BatchApplyFamily:
		return
	}
	if r.Err != nil {
		// A failed write, or a Create or Swap that lost: the value is
		// someone else's, and unknown here.
		delete(c.known, name)
		return
	}
	switch op.Kind {
	case storage.BatchGet:
		c.known[name] = cachedValue{value: r.Value, present: r.Value != nil}
	case storage.BatchPut, storage.BatchCreate:
		c.known[name] = cachedValue{value: append([]byte{}, op.Value...), present: true}
	case storage.BatchTake, storage.BatchDelete:
		c.known[name] = cachedValue{}
	case storage.BatchIncr:
		c.known[name] = cachedValue{value: []byte(strconv.FormatInt(r.N, 10)), present: true}
	case storage.BatchSwap:
		c.known[name] = cachedValue{value: append([]byte{}, op.Value...), present: op.Value != nil}
	}
}

func nameOf(op storage.BatchOp) cacheName {
	if op.Kind == storage.BatchGetRecords || op.Kind == storage.BatchFollow {
		return cacheName{kind: 'r', space: op.Group}
	}
	return cacheName{'k', op.NS, op.Key}
}

// read is the key's value if the request knows it, after sending the
// queue if a read of it is waiting there.
func (c *requestCache) read(ctx context.Context, ns, key string) (cachedValue, bool) {
	name := cacheName{'k', ns, key}
	if v, ok := c.lookup(name); ok {
		return v, true
	}
	c.mu.Lock()
	queued := c.queuedRead(ns, key)
	c.mu.Unlock()
	if !queued {
		return cachedValue{}, false
	}
	c.run(ctx)
	return c.lookup(name)
}

func (c *requestCache) lookup(name cacheName) (cachedValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.known[name]
	return v, ok
}

// single is op as its own call, for a store without Batch.
func single(ctx context.Context, kv storage.KV, op storage.BatchOp) storage.BatchResult {
	var r storage.BatchResult
	switch op.Kind {
	case storage.BatchGet, storage.BatchTake:
		get := kv.Get
		if op.Kind == storage.BatchTake {
			get = kv.Take
		}
		v, err := get(ctx, op.NS, op.Key)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			r.Err = err
		default:
			r.Value = append([]byte{}, v...)
		}
	case storage.BatchPut:
		r.Err = kv.Put(ctx, op.NS, op.Key, op.Value, op.TTL)
	case storage.BatchCreate:
		r.Err = kv.Create(ctx, op.NS, op.Key, op.Value, op.TTL)
	case storage.BatchDelete:
		r.Err = kv.Delete(ctx, op.NS, op.Key)
	case storage.BatchIncr:
		r.N, r.Err = kv.Incr(ctx, op.NS, op.Key, op.TTL)
	case storage.BatchSwap:
		r.Err = kv.Update(ctx, op.NS, op.Key, op.TTL, func(cur []byte) ([]byte, error) {
			switch {
			case cur == nil && op.Old != nil:
				return nil, storage.ErrNotFound
			case cur != nil && (op.Old == nil || !bytes.Equal(cur, op.Old)):
				return nil, storage.ErrAlreadyExists
			}
			return op.Value, nil
		})
	case storage.BatchGetRecords:
		rec, ok := kv.(storage.Records)
		if !ok {
			r.Err = fmt.Errorf("%T keeps no records", kv)
			break
		}
		r.Values, r.Err = rec.GetRecords(ctx, op.Group, op.Names...)
	case storage.BatchFollow:
		rec, ok := kv.(storage.Records)
		if !ok {
			r.Err = fmt.Errorf("%T keeps no records", kv)
			break
		}
		entry, record, err := rec.Follow(ctx, op.Group, op.Names[0], op.Prefix)
		r.Values, r.Err = [][]byte{entry, record}, err
	case storage.BatchApplyFamily:
		g, ok := kv.(storage.Grants)
		if !ok {
			r.Err = fmt.Errorf("%T keeps no grants", kv)
			break
		}
		r.Err = g.ApplyFamily(ctx, op.Family, op.ExpiresAt, op.Ops...)
	default:
		r.Err = fmt.Errorf("unknown batch op kind %d", op.Kind)
	}
	return r
}

// The store's calls, through the cache where the request has one.

func (s *requestStore) Get(ctx context.Context, ns, key string) ([]byte, error) {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.Get(ctx, ns, key)
	}
	v, ok := c.read(ctx, ns, key)
	if !ok {
		r := c.run(ctx, storage.GetOp(ns, key))[0]
		if r.Err != nil {
			return nil, r.Err
		}
		v = cachedValue{value: r.Value, present: r.Value != nil}
	}
	if !v.present {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v.value), nil
}

func (s *requestStore) GetMany(ctx context.Context, ns string, keys ...string) ([][]byte, error) {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.GetMany(ctx, ns, keys...)
	}
	out := make([][]byte, len(keys))
	var missing []int
	var ops []storage.BatchOp
	for i, k := range keys {
		if v, ok := c.read(ctx, ns, k); ok {
			if v.present {
				out[i] = append([]byte{}, v.value...)
			}
			continue
		}
		missing = append(missing, i)
		ops = append(ops, storage.GetOp(ns, k))
	}
	if len(ops) == 0 {
		return out, nil
	}
	for j, r := range c.run(ctx, ops...) {
		if r.Err != nil {
			return nil, r.Err
		}
		out[missing[j]] = r.Value
	}
	return out, nil
}

// write runs one write through the cache.
func (s *requestStore) write(ctx context.Context, c *requestCache, op storage.BatchOp) storage.BatchResult {
	c.mu.Lock()
	delete(c.known, nameOf(op))
	c.mu.Unlock()
	return c.run(ctx, op)[0]
}

func (s *requestStore) Put(ctx context.Context, ns, key string, value []byte, ttl time.Duration) error {
	if c := cacheOf(ctx); c != nil {
		return s.write(ctx, c, storage.PutOp(ns, key, value, ttl)).Err
	}
	return s.Store.Put(ctx, ns, key, value, ttl)
}

func (s *requestStore) Create(ctx context.Context, ns, key string, value []byte, ttl time.Duration) error {
	if c := cacheOf(ctx); c != nil {
		return s.write(ctx, c, storage.CreateOp(ns, key, value, ttl)).Err
	}
	return s.Store.Create(ctx, ns, key, value, ttl)
}

func (s *requestStore) Take(ctx context.Context, ns, key string) ([]byte, error) {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.Take(ctx, ns, key)
	}
	r := s.write(ctx, c, storage.TakeOp(ns, key))
	switch {
	case r.Err != nil:
		return nil, r.Err
	case r.Value == nil:
		return nil, storage.ErrNotFound
	}
	return r.Value, nil
}

func (s *requestStore) Delete(ctx context.Context, ns, key string) error {
	if c := cacheOf(ctx); c != nil {
		return s.write(ctx, c, storage.DeleteOp(ns, key)).Err
	}
	return s.Store.Delete(ctx, ns, key)
}

func (s *requestStore) Incr(ctx context.Context, ns, key string, window time.Duration) (int64, error) {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.Incr(ctx, ns, key, window)
	}
	r := s.write(ctx, c, storage.IncrOp(ns, key, window))
	return r.N, r.Err
}

// maxSwaps bounds an Update that keeps losing its compare-and-swap to
// other writers, as the Redis store bounds its own retries.
const maxSwaps = 50

// Update is a read (the cached value, else one read) and a compare-and-swap
// of what fn made of it, again from a fresh read while someone else wins.
// The write happens only if the key still holds what fn saw, so the
// result is what Update would have given; an fn that fails on a value
// the request read earlier runs again on a fresh one before its error
// counts.
func (s *requestStore) Update(ctx context.Context, ns, key string, ttl time.Duration, fn func(old []byte) ([]byte, error)) error {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.Update(ctx, ns, key, ttl, fn)
	}
	if s.batcher == nil {
		c.forget(cacheName{'k', ns, key})
		c.run(ctx) // a queued write of the key goes first
		return s.Store.Update(ctx, ns, key, ttl, fn)
	}
	name := cacheName{'k', ns, key}
	for range maxSwaps {
		v, known := c.read(ctx, ns, key)
		if !known {
			r := c.run(ctx, storage.GetOp(ns, key))[0]
			if r.Err != nil {
				return r.Err
			}
			v = cachedValue{value: r.Value, present: r.Value != nil}
		}
		// fn gets its own copy: it may change what it is given, and the
		// swap must compare with what the store held.
		var old, given []byte
		if v.present {
			old, given = v.value, append([]byte{}, v.value...)
		}
		next, err := fn(given)
		if err != nil {
			if !known {
				return err
			}
			c.forget(name)
			continue
		}
		r := c.run(ctx, storage.SwapOp(ns, key, old, next, ttl))[0]
		switch {
		case r.Err == nil:
			return nil
		case !errors.Is(r.Err, storage.ErrAlreadyExists) && !errors.Is(r.Err, storage.ErrNotFound):
			return r.Err
		}
	}
	return fmt.Errorf("%w: update: %d conflicting writes in a row", storage.ErrUnavailable, maxSwaps)
}

// errDropped is the outcome of a write the request ended without sending.
var errDropped = errors.New("not written: the request ended first")

func (c *requestCache) forget(name cacheName) {
	c.mu.Lock()
	delete(c.known, name)
	c.mu.Unlock()
}

func (s *requestStore) GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error) {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.GetRecords(ctx, group, names...)
	}
	out := make([][]byte, len(names))
	var missing []int
	var want []string
	for i, n := range names {
		if v, ok := c.lookup(cacheName{'r', group, n}); ok {
			if v.present {
				out[i] = append([]byte{}, v.value...)
			}
			continue
		}
		missing = append(missing, i)
		want = append(want, n)
	}
	if len(want) == 0 {
		return out, nil
	}
	r := c.run(ctx, storage.GetRecordsOp(group, want...))[0]
	if r.Err != nil {
		return nil, r.Err
	}
	for j, i := range missing {
		out[i] = r.Values[j]
	}
	return out, nil
}

// Follow answers from what the request knows of the entry and its record,
// else reads both with the queue: a login's count of the attempt goes with
// the username's lookup.
func (s *requestStore) Follow(ctx context.Context, group, name, prefix string) ([]byte, []byte, error) {
	c := cacheOf(ctx)
	if c == nil {
		return s.Store.Follow(ctx, group, name, prefix)
	}
	if e, ok := c.lookup(cacheName{'r', group, name}); ok {
		if !e.present {
			return nil, nil, nil
		}
		if r, ok := c.lookup(cacheName{'r', group, prefix + string(e.value)}); ok {
			var rec []byte
			if r.present {
				rec = bytes.Clone(r.value)
			}
			return bytes.Clone(e.value), rec, nil
		}
	}
	r := c.run(ctx, storage.FollowOp(group, name, prefix))[0]
	if r.Err != nil {
		return nil, nil, r.Err
	}
	return bytes.Clone(r.Values[0]), bytes.Clone(r.Values[1]), nil
}

// ApplyRecords goes to the store as it is (it is no batch op); what it
// touches is forgotten, whatever its outcome.
func (s *requestStore) ApplyRecords(ctx context.Context, group string, ops ...storage.RecordOp) error {
	if c := cacheOf(ctx); c != nil {
		c.mu.Lock()
		for _, op := range ops {
			delete(c.known, cacheName{'r', group, op.Name})
		}
		c.mu.Unlock()
	}
	return s.Store.ApplyRecords(ctx, group, ops...)
}

// ApplyFamily carries what is queued: a login's last round trip writes its
// session and its grant together.
func (s *requestStore) ApplyFamily(ctx context.Context, family string, expiresAt time.Time, ops ...storage.Op) error {
	if c := cacheOf(ctx); c != nil {
		return c.run(ctx, storage.ApplyFamilyOp(family, expiresAt, ops...))[0].Err
	}
	return s.Store.ApplyFamily(ctx, family, expiresAt, ops...)
}

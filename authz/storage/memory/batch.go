package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/stepup-dev/stepup/authz/storage"
)

var _ storage.Batcher = (*Store)(nil)

// Batch runs each op through its own call. In this store every call is
// atomic by its lock and nothing is remote, so there is no round trip to
// save; what the contract asks of a batch (each op atomic, the whole not)
// holds as it is.
func (s *Store) Batch(ctx context.Context, ops ...storage.BatchOp) ([]storage.BatchResult, error) {
	out := make([]storage.BatchResult, len(ops))
	for i, op := range ops {
		r := &out[i]
		switch op.Kind {
		case storage.BatchGet, storage.BatchTake:
			get := s.Get
			if op.Kind == storage.BatchTake {
				get = s.Take
			}
			v, err := get(ctx, op.NS, op.Key)
			if errors.Is(err, storage.ErrNotFound) {
				err = nil
			} else if err == nil && v == nil {
				v = []byte{}
			}
			r.Value, r.Err = v, err
		case storage.BatchPut:
			r.Err = s.Put(ctx, op.NS, op.Key, op.Value, op.TTL)
		case storage.BatchCreate:
			r.Err = s.Create(ctx, op.NS, op.Key, op.Value, op.TTL)
		case storage.BatchDelete:
			r.Err = s.Delete(ctx, op.NS, op.Key)
		case storage.BatchIncr:
			r.N, r.Err = s.Incr(ctx, op.NS, op.Key, op.TTL)
		case storage.BatchSwap:
			r.Err = s.swap(op)
		case storage.BatchGetRecords:
			r.Values, r.Err = s.GetRecords(ctx, op.Group, op.Names...)
		case storage.BatchFollow:
			if len(op.Names) != 1 {
				return nil, fmt.Errorf("memory batch: follow of %d names", len(op.Names))
			}
			entry, rec, err := s.Follow(ctx, op.Group, op.Names[0], op.Prefix)
			r.Values, r.Err = [][]byte{entry, rec}, err
		case storage.BatchApplyFamily:
			r.Err = s.ApplyFamily(ctx, op.Family, op.ExpiresAt, op.Ops...)
		default:
			return nil, fmt.Errorf("memory batch: unknown op kind %d", op.Kind)
		}
	}
	return out, nil
}

func (s *Store) swap(op storage.BatchOp) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	k := kvKey(op.NS, op.Key)
	it, present := s.live(k)
	switch {
	case !present && op.Old != nil:
		return storage.ErrNotFound
	case present && (op.Old == nil || !bytes.Equal(it.value, op.Old)):
		return storage.ErrAlreadyExists
	}
	if op.Value == nil {
		delete(s.kv, k)
		return nil
	}
	s.kv[k] = item{value: bytes.Clone(op.Value), expires: expiry(s.now(), op.TTL)}
	return nil
}

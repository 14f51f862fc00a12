package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/seal"
)

// keyRecord is a key set that knows when it is due for rotation.
type keyRecord[K any] interface {
	*K
	RotationDue(now time.Time) bool
}

// sealedKeys keeps one key record in the store, sealed with the operator's
// secret, so that every replica uses the same keys and sees the same
// rotations. The record is created on first use and rotated when due, both
// inside one atomic update, so replicas racing to do it agree on one result.
// Reads come from a cache that lasts a short refresh interval.
type sealedKeys[K any, P keyRecord[K]] struct {
	kv   storage.KV
	box  *seal.Box
	name string // store key and sealing context
	// create makes a new record; rotate rotates one in place; stale says a
	// record no longer fits the configuration and must be made anew.
	create func(now time.Time) (P, error)
	rotate func(p P, now time.Time) error
	stale  func(p P) bool
	now    func() time.Time

	mu          sync.Mutex
	cur         P
	freshUntil  time.Time
	lastRefresh time.Time
}

const (
	keysNS = "keys"
	// keysRefresh bounds how long another replica's rotation stays unseen.
	keysRefresh = time.Minute
	// unknownKeyBackoff rate-limits reloads caused by tokens naming a key
	// we do not know, which anyone can send.
	unknownKeyBackoff = 5 * time.Second
)

func (s *sealedKeys[K, P]) current(ctx context.Context) (P, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.now().Before(s.freshUntil) {
		return s.cur, nil
	}
	return s.reloadLocked(ctx)
}

// reloadIfAllowed rereads the record unless it was read moments ago.
func (s *sealedKeys[K, P]) reloadIfAllowed(ctx context.Context) (P, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.now().Sub(s.lastRefresh) < unknownKeyBackoff {
		return s.cur, nil
	}
	return s.reloadLocked(ctx)
}

func (s *sealedKeys[K, P]) reloadLocked(ctx context.Context) (P, error) {
	now := s.now()
	s.lastRefresh = now
	var cur P
	data, err := s.kv.Get(ctx, keysNS, s.name)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if cur, err = s.open(data); err != nil {
			return nil, err
		}
	}
	if cur == nil || cur.RotationDue(now) || s.stale(cur) {
		err = s.kv.Update(ctx, keysNS, s.name, 0, func(old []byte) ([]byte, error) {
			var p P
			var err error
			if old != nil {
				if p, err = s.open(old); err != nil {
					return nil, err
				}
			}
			switch {
			case p == nil || s.stale(p):
				p, err = s.create(now)
			case p.RotationDue(now):
				err = s.rotate(p, now)
			}
			if err != nil {
				return nil, err
			}
			cur = p
			return s.seal(p)
		})
		if err != nil {
			return nil, err
		}
	}
	s.cur = cur
	s.freshUntil = now.Add(keysRefresh)
	if cur.RotationDue(s.freshUntil) {
		s.freshUntil = now.Add(time.Second)
	}
	return cur, nil
}

// rotateNow rotates whatever the schedule (the admin command).
func (s *sealedKeys[K, P]) rotateNow(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.kv.Update(ctx, keysNS, s.name, 0, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errors.New("no keys to rotate yet: start the server once first")
		}
		p, err := s.open(old)
		if err != nil {
			return nil, err
		}
		if err := s.rotate(p, s.now()); err != nil {
			return nil, err
		}
		return s.seal(p)
	})
	if err != nil {
		return err
	}
	_, err = s.reloadLocked(ctx)
	return err
}

func (s *sealedKeys[K, P]) aad() []byte { return []byte("stepup keys v1 " + s.name) }

func (s *sealedKeys[K, P]) open(data []byte) (P, error) {
	plain, err := s.box.Open(data, s.aad())
	if err != nil {
		return nil, fmt.Errorf("the stored %s keys cannot be decrypted: is this the secret they were sealed with? %w", s.name, err)
	}
	p := P(new(K))
	if err := json.Unmarshal(plain, p); err != nil {
		return nil, fmt.Errorf("decoding the stored %s keys: %w", s.name, err)
	}
	return p, nil
}

func (s *sealedKeys[K, P]) seal(p P) ([]byte, error) {
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return s.box.Seal(plain, s.aad()), nil
}

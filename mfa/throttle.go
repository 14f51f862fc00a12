package mfa

import "time"

// Throttle is the policy for wrong second-factor codes: a few free attempts
// for typos, then an exponentially growing wait. A six-digit code has only a
// million values, so an unthrottled guesser gets through quickly.
//
// Wait is a pure function; the caller stores the failure count, because only
// the store sees the failures from every replica. Zero fields take defaults.
type Throttle struct {
	Free int           // failures allowed before waiting; default 5, negative for none
	Base time.Duration // first wait; default 30s
	Max  time.Duration // cap; default 15m
}

const (
	defaultFree = 5
	defaultBase = 30 * time.Second
	defaultMax  = 15 * time.Minute
)

// Wait returns how long to wait after failures consecutive failures: 0 while
// failures < Free, then Base, 2×Base, 4×Base … up to Max.
func (t Throttle) Wait(failures int) time.Duration {
	free, base, limit := t.Free, t.Base, t.Max
	switch {
	case free == 0:
		free = defaultFree
	case free < 0:
		free = 0
	}
	if base <= 0 {
		base = defaultBase
	}
	if limit <= 0 {
		limit = defaultMax
	}
	if failures < free {
		return 0
	}
	d := min(base, limit)
	// Doubling stops at the cap, so this runs at most ~63 times and never
	// overflows however large failures grows.
	for range failures - free {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return d
}

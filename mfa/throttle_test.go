package mfa

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestThrottleDefaults(t *testing.T) {
	want := []time.Duration{
		0, 0, 0, 0, 0, // five free attempts
		30 * time.Second,
		1 * time.Minute,
		2 * time.Minute,
		4 * time.Minute,
		8 * time.Minute,
		15 * time.Minute, // 16m, capped
		15 * time.Minute,
		15 * time.Minute,
	}
	for failures, w := range want {
		t.Run(fmt.Sprintf("ok/%d-failures", failures), func(t *testing.T) {
			if got := (Throttle{}).Wait(failures); got != w {
				t.Fatalf("Wait(%d) = %v, want %v", failures, got, w)
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	for _, tc := range []struct {
		name     string
		throttle Throttle
		failures int
		want     time.Duration
	}{
		{"ok/negative-failures", Throttle{}, -3, 0},
		{"ok/huge-failures-stay-capped", Throttle{}, math.MaxInt, 15 * time.Minute},
		{"ok/custom-free", Throttle{Free: 2}, 1, 0},
		{"ok/custom-free-first-wait", Throttle{Free: 2}, 2, 30 * time.Second},
		{"ok/none-free", Throttle{Free: -1}, 0, 30 * time.Second},
		{"ok/none-free-second", Throttle{Free: -1}, 1, time.Minute},
		{"ok/custom-base", Throttle{Base: time.Second}, 7, 4 * time.Second},
		{"ok/custom-max", Throttle{Max: time.Minute}, 9, time.Minute},
		{"ok/max-below-base", Throttle{Base: time.Hour, Max: time.Minute}, 5, time.Minute},
		{"ok/max-not-a-power-of-two-multiple", Throttle{Base: time.Second, Max: 5 * time.Second}, 8, 5 * time.Second},
		{"ok/huge-max-no-overflow", Throttle{Max: math.MaxInt64}, math.MaxInt, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.throttle.Wait(tc.failures); got != tc.want {
				t.Fatalf("%+v.Wait(%d) = %v, want %v", tc.throttle, tc.failures, got, tc.want)
			}
		})
	}
}

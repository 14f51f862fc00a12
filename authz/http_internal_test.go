package authz

import (
	"testing"
	"time"
)

func TestEverySecondThinsOutAndCounts(t *testing.T) {
	var e everySecond
	t0 := time.Unix(1_800_000_000, 0)
	for _, step := range []struct {
		at   time.Duration
		want int
	}{
		{0, 1},                      // the first is reported at once
		{300 * time.Millisecond, 0}, // then held back for a second
		{900 * time.Millisecond, 0},
		{time.Second, 3}, // with the ones held back
		{1500 * time.Millisecond, 0},
		{5 * time.Second, 2},
	} {
		if got := e.note(t0.Add(step.at)); got != step.want {
			t.Errorf("note at +%v = %d, want %d", step.at, got, step.want)
		}
	}
}

func TestHeaderSafe(t *testing.T) {
	if got := headerSafe("ok \"quoted\" back\\slash … end"); got != "ok  quoted  back slash   end" {
		t.Errorf("headerSafe = %q", got)
	}
}

package tokens

import (
	"testing"
	"time"
)

func TestHumanDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{15 * time.Minute, "15 minutes"},
		{time.Minute, "1 minute"},
		{30 * time.Second, "30 seconds"},
		{1500 * time.Millisecond, "2 seconds"},
		{0, "1 second"},
		{90 * time.Minute, "1 hour 30 minutes"},
		{90 * 24 * time.Hour, "90 days"},
		{24*time.Hour + 5*time.Minute, "1 day"},
		{2*time.Hour + 59*time.Minute + 59*time.Second, "2 hours 59 minutes"},
	} {
		if got := HumanDuration(tt.d); got != tt.want {
			t.Errorf("HumanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

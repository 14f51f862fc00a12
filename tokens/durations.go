package tokens

import (
	"strconv"
	"time"
)

// HumanDuration says d the way a page or an error message should: "15
// minutes", "1 hour 30 minutes", "90 days", never "15m0s". It rounds up to
// the second, so that a wait is never announced shorter than it is, and
// names at most two units.
func HumanDuration(d time.Duration) string {
	if d < time.Second {
		d = time.Second
	}
	secs := int64((d + time.Second - 1) / time.Second)
	units := []struct {
		name string
		secs int64
	}{{"day", 86400}, {"hour", 3600}, {"minute", 60}, {"second", 1}}
	out := ""
	parts := 0
	for _, u := range units {
		n := secs / u.secs
		if n == 0 {
			if parts > 0 {
				break // "1 day 5 minutes" reads as a slip; stop at a gap
			}
			continue
		}
		secs -= n * u.secs
		if out != "" {
			out += " "
		}
		out += strconv.FormatInt(n, 10) + " " + u.name
		if n != 1 {
			out += "s"
		}
		if parts++; parts == 2 {
			break
		}
	}
	return out
}

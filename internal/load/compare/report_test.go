package compare

import (
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

// TestCompareShowsFailures: operations that failed are in the table and
// under Outcomes, with their example, whichever side they came from.
func TestCompareShowsFailures(t *testing.T) {
	o := Options{Runs: 1, Concurrency: 2, Duration: time.Second, Scenarios: []string{load.ClientCredentials, load.Healthz}}
	ok := func(n int) outcome {
		return outcome{ops: n, ok: n, elapsed: time.Second, p50: time.Millisecond, p99: 2 * time.Millisecond, counts: map[string]int{load.KindOK: n}}
	}
	failing := outcome{ops: 110, ok: 100, elapsed: time.Second, p50: time.Millisecond, p99: 8 * time.Millisecond,
		counts:  map[string]int{load.KindOK: 100, "4xx:401": 7, load.KindTransport: 3},
		samples: map[string]string{"4xx:401": "401 invalid_client"}}
	runs := []runResult{{first: sideBaseline, raw: load.Baseline{What: "ES256 sign", Cost: 40 * time.Microsecond}, sides: map[string]sideRun{
		sideStepupd:  {results: map[string]outcome{load.ClientCredentials: failing, load.Healthz: ok(1000)}, rssStart: 1024, rssEnd: 2048, rssPeak: 4096},
		sideBaseline: {results: map[string]outcome{load.ClientCredentials: ok(50), load.Healthz: ok(1000)}, rssStart: -1, rssEnd: -1, rssPeak: -1},
	}}}
	var b strings.Builder
	if err := writeComparison(&b, o, "test", runs); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	rows := scenarioRows(text, load.ClientCredentials)
	st, bs := rows["1 stepupd"], rows["1 baseline"]
	switch {
	case st == nil || bs == nil:
		t.Fatalf("no rows for run 1:\n%s", text)
	case st[2] != "100" || st[7] != "10" || st[8] != "2.00x":
		t.Errorf("stepupd's row %q: want 100 ok/s, 10 not ok, 2.00x the baseline's rate", st)
	case st[6] != "4.00x":
		t.Errorf("stepupd's p99/hz %q: want 8ms/2ms = 4.00x", st[6])
	case bs[2] != "50.0" || bs[7] != "0":
		t.Errorf("the baseline's row %q: want 50.0 ok/s, 0 not ok", bs)
	}
	if m := rows["median stepupd"]; m == nil || m[7] != "10" {
		t.Errorf("median row %q: want the 10 operations not ok", m)
	}
	for _, want := range []string{
		"2xx=100 4xx:401=7 transport=3",
		"4xx:401 e.g.: 401 invalid_client",
		"client_credentials: stepupd's ok/s at least 1.3x bare fosite's 2.00x met",
		"client_credentials: stepupd's p99 within 3x its /healthz p99 4.00x not met",
		"ES256 sign of an access token: median 40µs",
		"1 stepupd 1.0 2.0 4.0",
		"1 baseline n/a n/a n/a",
	} {
		// Column widths are not the point.
		if !strings.Contains(strings.Join(strings.Fields(text), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
}

// scenarioRows are the rows of one scenario's table, by "run side".
func scenarioRows(text, scenario string) map[string][]string {
	rows := map[string][]string{}
	in := false
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, scenario+": "):
			in = true
		case l == "":
			in = false
		case in:
			if f := strings.Fields(l); len(f) >= 8 && f[0] != "run" {
				rows[f[0]+" "+f[1]] = f
			}
		}
	}
	return rows
}

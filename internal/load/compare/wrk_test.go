package compare

import (
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

func TestParseWRK(t *testing.T) {
	out := "Running 1s test\nstepup-wrk duration_us=2000000 requests=290 transport=4 p50_us=950 p99_us=12000\n" +
		"stepup-wrk-kind 2xx 280\nstepup-wrk-kind 4xx:401 6\nstepup-wrk-kind invalid 4\n" +
		"stepup-wrk-sample 4xx:401 401 {\"error\":\"invalid_client\"}\n"
	o, err := parseWRK([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if o.ok != 280 || o.ops != 294 || o.counts[load.KindTransport] != 4 || o.counts["invalid"] != 4 ||
		o.elapsed != 2*time.Second || o.p50 != 950*time.Microsecond || o.p99 != 12*time.Millisecond || o.rate() != 140 {
		t.Errorf("parsed %+v", o)
	}
	if o.samples["4xx:401"] != `401 {"error":"invalid_client"}` {
		t.Errorf("sample %q", o.samples["4xx:401"])
	}
	if _, err := parseWRK([]byte("Running 1s test\n")); err == nil {
		t.Error("no totals line: no error")
	}
}

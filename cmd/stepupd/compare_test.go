package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/internal/load"
)

// TestCompare runs stepupd compare on the real binary, once with
// stepupd's own load generator and once with wrk where it is installed.
func TestCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four servers and loads each for 3 s")
	}
	bin := stepupdBinary(t)
	for _, c := range []struct {
		name, wrk, driver string
	}{
		{"load generator", "never", "stepupd's load generator"},
		{"wrk", "auto", "wrk "},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.wrk == "auto" {
				if _, err := exec.LookPath("wrk"); err != nil {
					t.Skip("wrk is not installed")
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "compare", "--runs", "1", "--duration", "1s", "--concurrency", "2", "--wrk", c.wrk)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			text := string(out)
			if err != nil {
				t.Fatalf("stepupd compare: %v\nstdout:\n%s\nstderr:\n%s", err, text, stderr.String())
			}
			if !strings.Contains(text, "Load: "+c.driver) {
				t.Errorf("the output does not say the load came from %q", c.driver)
			}
			for _, sc := range []string{load.ClientCredentials, load.Introspect, load.Healthz} {
				rows := scenarioRows(text, sc)
				for _, side := range sides {
					f, ok := rows["1 "+side]
					if !ok {
						t.Errorf("%s: no row for run 1, %s", sc, side)
						continue
					}
					rate, err := strconv.ParseFloat(strings.ReplaceAll(f[2], ",", ""), 64)
					if err != nil || rate <= 0 {
						t.Errorf("%s, %s: ok/s %q, want more than 0", sc, side, f[2])
					}
					if f[7] != "0" {
						t.Errorf("%s, %s: %s operations not ok", sc, side, f[7])
					}
				}
			}
			for _, side := range sides {
				if !hasRow(text, "  1    "+side, 5) {
					t.Errorf("no memory row for %s", side)
				}
			}
			if !strings.Contains(text, "ES256 sign of an access token: median ") {
				t.Error("no raw ES256 cost")
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", text, stderr.String())
			}
		})
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

// hasRow reports whether a line starts with prefix and has at least n
// fields, none of them n/a.
func hasRow(text, prefix string, n int) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) && len(strings.Fields(l)) >= n && !strings.Contains(l, "n/a") {
			return true
		}
	}
	return false
}

// TestBaselineCommand: stepupd baseline prints where it listens and its
// client's secret, issues tokens to that client only, and stops on SIGINT
// (start's cleanup fails the test otherwise).
func TestBaselineCommand(t *testing.T) {
	p := start(t, nil, "baseline", "--addr", "127.0.0.1:0")
	first, second := nextLine(t, p), nextLine(t, p)
	_, base, ok := strings.Cut(first, " listening on ")
	if !strings.HasPrefix(first, "bare fosite v") || !ok || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("first line %q: want bare fosite's version and its address", first)
	}
	f := strings.Fields(second)
	if len(f) != 4 || f[0] != "client:" || f[1] != compareClient || f[2] != "secret:" {
		t.Fatalf("second line %q: want the client and its secret", second)
	}
	token := func(secret string) error {
		cc := clientcredentials.Config{ClientID: f[1], ClientSecret: secret, TokenURL: base + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}
		_, err := cc.Token(context.Background())
		return err
	}
	if err := token(f[3]); err != nil {
		t.Errorf("client_credentials with the printed secret: %v", err)
	}
	var re *oauth2.RetrieveError
	if err := token(f[3] + "x"); !errors.As(err, &re) || re.Response.StatusCode != http.StatusUnauthorized {
		t.Errorf("client_credentials with a wrong secret: %v, want 401", err)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
}

func nextLine(t *testing.T, p *process) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-time.After(15 * time.Second):
		t.Fatalf("no output from stepupd baseline within 15s; so far:\n%s", p.output())
		return ""
	}
}

// TestCompareShowsFailures: operations that failed are in the table and
// under Outcomes, with their example, whichever side they came from.
func TestCompareShowsFailures(t *testing.T) {
	o := compareOptions{runs: 1, concurrency: 2, duration: time.Second, scenarios: []string{load.ClientCredentials, load.Healthz}}
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

func TestCompareFlags(t *testing.T) {
	o, err := parseCompareFlags([]string{"--scenarios", "introspect, client_credentials,introspect"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.scenarios, ",") != "introspect,client_credentials,healthz" || o.runs != 3 || o.concurrency != 16 || o.duration != 10*time.Second || o.wrk != "auto" {
		t.Errorf("options %+v: want the scenarios in order, healthz added, and the defaults", o)
	}
	for _, args := range [][]string{
		{"--scenarios", "refresh"},
		{"--runs", "0"},
		{"--duration", "0s"},
		{"--wrk", "always"},
		{"extra"},
	} {
		if _, err := parseCompareFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// The sides are stopped with SIGTERM; a process that ignores it is killed.
func TestChildStop(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	c, err := startChild(sh, []string{"-c", "trap '' TERM; echo started; sleep 60"}, t.TempDir()+"/log")
	if err != nil {
		t.Fatal(err)
	}
	defer c.cmd.Process.Kill()
	c.grace = 300 * time.Millisecond
	time.Sleep(200 * time.Millisecond) // let the shell set its trap
	if _, err := os.Stat("/proc/self/status"); err == nil {
		if rss, peak := memStatus(c.pid()); rss <= 0 || peak < rss {
			t.Errorf("VmRSS %d kB, VmHWM %d kB of a running process", rss, peak)
		}
	}
	if c.exited() {
		t.Fatal("exited at once")
	}
	start := time.Now()
	if err := c.stop(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stop of a process that ignores SIGTERM: %v, want killed", err)
	}
	if d := time.Since(start); d < c.grace {
		t.Errorf("killed after %s, before the grace of %s", d, c.grace)
	}
	if !strings.Contains(c.tail(), "started") {
		t.Errorf("tail %q: want the process's output", c.tail())
	}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && !ws.Signaled() {
		t.Errorf("exit %v, want killed by a signal", c.cmd.ProcessState)
	}
}

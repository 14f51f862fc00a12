package compare

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

// legend explains writeComparison's columns.
const legend = `  ok/s     successful operations a second: a 2xx with what the scenario needs (a token, "active":true).
  p50 p99  latency; stepupd's load generator times the successful operations, wrk every answer.
  hz p99   the same side's GET /healthz p99 in the same run: the floor of its latencies there.
  p99/hz   p99 ÷ hz p99.
  not ok   operations that did not succeed, listed by kind under "Outcomes".
  vs base  stepupd's ok/s ÷ bare fosite's in the same run.
  median   the median of each column over the runs; of a ratio, the median of the per-run ratios;
           not ok is the sum over the runs.
`

// writeComparison prints a table per scenario, issue 17's goals, the raw
// crypto, memory and every outcome.
func writeComparison(w io.Writer, o Options, loadName string, runs []runResult) error {
	var b strings.Builder
	version := FositeVersion()
	var order []string
	for i, r := range runs {
		order = append(order, fmt.Sprintf("run %d %s", i+1, r.first))
	}
	fmt.Fprintf(&b, "stepupd compare: stepupd (memory store) against bare fosite %s (its memory store), both from this binary,\n", version)
	fmt.Fprintf(&b, "a fresh process of each side per run; %d run(s), first to go: %s.\n", len(runs), strings.Join(order, ", "))
	fmt.Fprintf(&b, "%d concurrent clients, %s per scenario, one scenario at a time. Load: %s,\n", o.Concurrency, o.Duration, loadName)
	fmt.Fprintf(&b, "on the same %d CPUs as the server it drives; %s.\n", runtime.NumCPU(), runtime.Version())
	b.WriteString(legend)

	const row = "  %-6s %-8s %9s %8s %8s %8s %7s %7s %s\n"
	for _, sc := range o.Scenarios {
		fmt.Fprintf(&b, "\n%s: %s\n", sc, descriptions[sc])
		fmt.Fprintf(&b, row, "run", "side", "ok/s", "p50", "p99", "hz p99", "p99/hz", "not ok", "vs base")
		type figures struct {
			rate, hzRatio, vs float64
			p50, p99, hz      time.Duration
			notOK             int
		}
		per := map[string][]figures{}
		for _, r := range runs {
			for _, side := range sides {
				out := r.sides[side].results[sc]
				f := figures{rate: out.rate(), p50: out.p50, p99: out.p99, notOK: out.ops - out.ok,
					hz: r.sides[side].results[load.Healthz].p99}
				if f.hz > 0 {
					f.hzRatio = float64(f.p99) / float64(f.hz)
				}
				if base := r.sides[sideBaseline].results[sc].rate(); side == sideStepupd && base > 0 {
					f.vs = f.rate / base
				}
				per[side] = append(per[side], f)
			}
		}
		line := func(run, side string, f figures) {
			vs := ""
			if side == sideStepupd {
				vs = fmtRatio(f.vs)
			}
			text := fmt.Sprintf(row, run, side, fmtRate(f.rate), load.FormatDuration(f.p50), load.FormatDuration(f.p99), load.FormatDuration(f.hz),
				fmtRatio(f.hzRatio), strconv.Itoa(f.notOK), vs)
			b.WriteString(strings.TrimRight(text, " \n") + "\n")
		}
		for _, side := range sides {
			fs := per[side]
			m := figures{
				rate:    median(pluck(fs, func(f figures) float64 { return f.rate })),
				hzRatio: median(pluck(fs, func(f figures) float64 { return f.hzRatio })),
				vs:      median(pluck(fs, func(f figures) float64 { return f.vs })),
				p50:     median(pluck(fs, func(f figures) time.Duration { return f.p50 })),
				p99:     median(pluck(fs, func(f figures) time.Duration { return f.p99 })),
				hz:      median(pluck(fs, func(f figures) time.Duration { return f.hz })),
			}
			for _, f := range fs {
				m.notOK += f.notOK
			}
			line("median", side, m)
		}
		for i := range runs {
			for _, side := range sides {
				line(strconv.Itoa(i+1), side, per[side][i])
			}
		}
	}

	b.WriteString("\nIssue 17's goals, on the medians of the per-run ratios:\n")
	goal := func(what string, x float64, met bool) {
		verdict := "not met"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(&b, "  %-66s %7s  %s\n", what, fmtRatio(x), verdict)
	}
	for _, sc := range o.Scenarios {
		var vs, hz []float64
		for _, r := range runs {
			st, bs := r.sides[sideStepupd].results, r.sides[sideBaseline].results
			if base := bs[sc].rate(); base > 0 {
				vs = append(vs, st[sc].rate()/base)
			}
			if p := st[load.Healthz].p99; p > 0 {
				hz = append(hz, float64(st[sc].p99)/float64(p))
			}
		}
		if sc == load.ClientCredentials && len(vs) > 0 {
			m := median(vs)
			goal(sc+": stepupd's ok/s at least 1.3x bare fosite's", m, m >= 1.3)
		}
		if sc != load.Healthz && len(hz) > 0 {
			m := median(hz)
			goal(sc+": stepupd's p99 within 3x its /healthz p99", m, m <= 3)
		}
	}

	b.WriteString("\nRaw crypto, timed in this process between runs, one at a time on one core (as stepupd bench times it):\n")
	var raws []time.Duration
	var rawText []string
	what := ""
	for _, r := range runs {
		if r.raw.Cost > 0 {
			raws, what = append(raws, r.raw.Cost), r.raw.What
		}
		rawText = append(rawText, load.FormatDuration(r.raw.Cost))
	}
	if len(raws) > 0 {
		fmt.Fprintf(&b, "  %s of an access token: median %s (runs: %s); a client_credentials token costs one, an\n"+
			"  introspection one verification, which costs more.\n", what, load.FormatDuration(median(raws)), strings.Join(rawText, ", "))
	} else {
		b.WriteString("  not measured\n")
	}

	b.WriteString("\nMemory: VmRSS from /proc/PID/status, MiB, once /healthz answered and after the last scenario; peak is VmHWM.\n")
	const memRow = "  %-4s %-8s %12s %11s %8s\n"
	fmt.Fprintf(&b, memRow, "run", "side", "after start", "after load", "peak")
	for i, r := range runs {
		for _, side := range sides {
			sr := r.sides[side]
			fmt.Fprintf(&b, memRow, strconv.Itoa(i+1), side, fmtMiB(sr.rssStart), fmtMiB(sr.rssEnd), fmtMiB(sr.rssPeak))
		}
	}

	b.WriteString("\nOutcomes: every operation, by kind (2xx is a success; 4xx:STATUS, 503, 5xx:STATUS, transport, invalid are not).\n")
	for _, sc := range o.Scenarios {
		name := sc
		for i, r := range runs {
			for _, side := range sides {
				out := r.sides[side].results[sc]
				fmt.Fprintf(&b, "  %-19s run %d %-8s %d ops: %s\n", name, i+1, side, out.ops, kindsText(out.counts))
				name = ""
				for _, k := range slices.Sorted(maps.Keys(out.samples)) {
					fmt.Fprintf(&b, "  %-19s       %-8s %s e.g.: %s\n", "", "", k, out.samples[k])
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func kindsText(counts map[string]int) string {
	if len(counts) == 0 {
		return "none"
	}
	ks := slices.Sorted(maps.Keys(counts))
	// Successes first.
	slices.SortStableFunc(ks, func(a, b string) int {
		switch {
		case a == load.KindOK && b != load.KindOK:
			return -1
		case b == load.KindOK && a != load.KindOK:
			return 1
		}
		return 0
	})
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}

func pluck[F, T any](fs []F, get func(F) T) []T {
	out := make([]T, len(fs))
	for i, f := range fs {
		out[i] = get(f)
	}
	return out
}

// median of xs, the mean of the middle two for an even count; zeros (not
// measured) are left out.
func median[T ~int64 | ~float64](xs []T) T {
	var s []T
	for _, x := range xs {
		if x != 0 {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtRate(x float64) string {
	switch {
	case x <= 0:
		return "0"
	case x < 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	digits := strconv.FormatFloat(x, 'f', 0, 64)
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtRatio(x float64) string {
	if x <= 0 {
		return "-"
	}
	return strconv.FormatFloat(x, 'f', 2, 64) + "x"
}

func fmtMiB(kB int64) string {
	if kB < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(kB)/1024)
}

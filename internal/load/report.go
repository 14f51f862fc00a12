package load

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Legend explains the columns WriteText prints.
const Legend = `  op       one token request (client_credentials, refresh), one POST /ssh, one POST /oauth2/introspect,
           one GET /api/orgs/{org}/members?limit=50 (members); for login the whole login: GET
           /oauth2/authorize, the login page, POST /login with the CSRF token, the redirect to the
           loopback callback (read, never followed), the code exchange.
  ok/s     successful ops per second. p50 … max: latency of the successful ops.
  raw      the cryptography the server cannot avoid for one op (listed below the table), timed in this
           process one operation at a time on one core, with the server's libraries and parameters.
           Everything else (HTTP, JSON, HMACs, the store, scheduling) is what the server adds.
  p50/raw  median latency ÷ raw: 1.0 would be nothing but the crypto. With more clients than CPUs it
           includes waiting for a CPU.
  %ceil    ok/s ÷ (CPUs ÷ raw): the share of the rate that every CPU doing nothing but that crypto
           would reach. When the load runs on the server's machine, it takes some of those CPUs.
`

// WriteText prints the report: a header with Legend, one line per scenario
// starting with its name, the raw crypto each measured, and a sample error
// of each kind of failure.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Stepup load test of %s: %d concurrent clients per scenario, %s each, one scenario at a time; %d CPUs here.\n",
		r.URL, r.Concurrency, r.Duration, r.CPUs)
	b.WriteString(Legend)
	b.WriteString("\n")
	const row = "%-19s %9s %9s %9s %9s %9s %9s %8s %7s\n"
	fmt.Fprintf(&b, row, "scenario", "ok/s", "p50", "p90", "p99", "max", "raw", "p50/raw", "%ceil")
	for _, s := range r.Scenarios {
		if s.Err != nil {
			fmt.Fprintf(&b, row, s.Name, "-", "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		raw, ratio, ceil := "-", "-", "-"
		if s.Baseline.Cost > 0 {
			raw = FormatDuration(s.Baseline.Cost)
			if s.OK > 0 {
				ratio = fmt.Sprintf("%.1fx", float64(s.Latency.P50)/float64(s.Baseline.Cost))
				ceiling := float64(r.CPUs) / s.Baseline.Cost.Seconds()
				ceil = fmt.Sprintf("%.1f%%", 100*s.Throughput()/ceiling)
			}
		}
		fmt.Fprintf(&b, row, s.Name, fmt.Sprintf("%.1f", s.Throughput()),
			FormatDuration(s.Latency.P50), FormatDuration(s.Latency.P90), FormatDuration(s.Latency.P99), FormatDuration(s.Latency.Max), raw, ratio, ceil)
	}

	b.WriteString("\noutcomes (ops by kind):\n")
	for _, s := range r.Scenarios {
		if s.Err != nil {
			fmt.Fprintf(&b, "  %-19s not run: %v\n", s.Name, s.Err)
			continue
		}
		fmt.Fprintf(&b, "  %-19s %d ops: %s\n", s.Name, s.Ops, countsText(s.Counts))
		if !s.LastFailure.IsZero() {
			rec := "no success after it"
			if !s.RecoveredAt.IsZero() {
				rec = "first success " + FormatDuration(s.RecoveredAt.Sub(s.LastFailure)) + " later"
			}
			fmt.Fprintf(&b, "  %-19s failures from %s to %s into the run; %s\n", "",
				fmtOffset(s.FirstFailure.Sub(s.Start)), fmtOffset(s.LastFailure.Sub(s.Start)), rec)
		}
		for _, k := range kinds(s.Samples) {
			fmt.Fprintf(&b, "  %-19s %s e.g.: %s\n", "", k, shorten(s.Samples[k], 300))
		}
	}
	if hasBaseline(r) {
		b.WriteString("\nraw crypto per op:\n")
		for _, s := range r.Scenarios {
			if s.Baseline.What != "" {
				fmt.Fprintf(&b, "  %-19s %s = %s\n", s.Name, s.Baseline.What, FormatDuration(s.Baseline.Cost))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func hasBaseline(r Report) bool {
	return slices.ContainsFunc(r.Scenarios, func(s ScenarioReport) bool { return s.Baseline.What != "" })
}

// kinds sorts outcome kinds: successes first, then by name.
func kinds[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b string) int {
		if (a == KindOK) != (b == KindOK) {
			if a == KindOK {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return ks
}

func countsText(c map[string]int) string {
	if len(c) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range kinds(c) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, " ")
}

func fmtOffset(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// FormatDuration writes a latency with the digits that matter at its size.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

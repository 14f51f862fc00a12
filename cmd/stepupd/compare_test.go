package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/internal/load"
	loadcompare "github.com/stepup-dev/stepup/internal/load/compare"
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
				for _, side := range []string{"stepupd", "baseline"} {
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
			for _, side := range []string{"stepupd", "baseline"} {
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
	if len(f) != 4 || f[0] != "client:" || f[1] != loadcompare.ClientID || f[2] != "secret:" {
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

func TestCompareFlags(t *testing.T) {
	o, err := parseCompareFlags([]string{"--scenarios", "introspect, client_credentials,introspect"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Scenarios, ",") != "introspect,client_credentials,healthz" || o.Runs != 3 || o.Concurrency != 16 || o.Duration != 10*time.Second || o.NoWrk {
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

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestBenchAgainstDev runs `stepupd --dev` in process, reads the password
// and client secret it prints, and runs `stepupd bench` with them as its
// help says: every scenario, nothing but successes, a line each.
func TestBenchAgainstDev(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"--dev", "--addr", addr}, nil, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	var password, secret string
	lines := bufio.NewScanner(pr)
	for (password == "" || secret == "") && lines.Scan() {
		if _, rest, ok := strings.Cut(lines.Text(), "password: "); ok {
			password = strings.Fields(rest)[0]
		}
		if _, rest, ok := strings.Cut(lines.Text(), "secret: "); ok {
			secret = strings.Fields(rest)[0]
		}
	}
	if password == "" || secret == "" {
		t.Fatalf("--dev printed no password or no client secret (password %q, secret %q)", password, secret)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	waitReady(t, "http://"+addr)

	var out, errOut strings.Builder
	err := run(ctx, []string{"bench", "--url", "http://" + addr, "--duration", "1s", "--concurrency", "2",
		"--client-secret", secret, "--password", password}, nil, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, errOut.String(), out.String())
	}
	report := out.String()
	for _, name := range load.Scenarios {
		row, counts := line(report, name+" "), line(report, "  "+name+" ")
		if row == "" || counts == "" {
			t.Errorf("%s: no line in the report", name)
			continue
		}
		// "  refresh   123 ops: 2xx=123": successes, and no other kind.
		if kinds := strings.Fields(counts[strings.Index(counts, "ops:")+4:]); len(kinds) != 1 || !strings.HasPrefix(kinds[0], "2xx=") {
			t.Errorf("%s: outcomes %v, want only successes", name, kinds)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

func line(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestBenchRefusesWhatItCannotRun(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--scenarios", "nope", "--password", "x"},
		{"bench"}, // no credentials: nothing to run
		{"bench", "--scenarios", "login"},
		{"bench", "--concurrency", "0", "--password", "x"},
	} {
		var out, errOut strings.Builder
		if err := run(context.Background(), args, nil, &out, &errOut); err == nil {
			t.Errorf("%v: no error\n%s", args, out.String())
		}
	}
}

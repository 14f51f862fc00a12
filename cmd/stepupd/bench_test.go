package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/internal/load"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestBenchAgainstDev runs `stepupd --dev` in process, reads the password
// and client secret it prints, and runs `stepupd bench` with them as its
// help says: every scenario (members on the demo organization), nothing
// but successes, a line each.
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
		"--client-secret", secret, "--password", password, "--org", "demo"}, nil, &out, &errOut)
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
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--scenarios", "nope", "--password", "x"}, `unknown scenario "nope"`},
		{[]string{"bench"}, "nothing to run"}, // no credentials
		{[]string{"bench", "--scenarios", "login"}, "needs a username and password"},
		{[]string{"bench", "--scenarios", "members", "--password", "x"}, "members needs an organization"},
		{[]string{"bench", "--concurrency", "0", "--password", "x"}, "--concurrency"},
		{[]string{"bench", "--seed-users", "10", "--password", "x"}, "--seed-users needs --store"},
		{[]string{"bench", "--seed-users", "10", "--password", "x", "--store", "memory"}, "a memory store lives only inside its server"},
		{[]string{"bench", "--seed-users", "10", "--store", "redis://127.0.0.1:1/0"}, "--seed-users needs --password"},
		{[]string{"bench", "--seed-org", "bench", "--password", "x"}, "go with --seed-users"},
		{[]string{"bench", "--seed-users", "10", "--login-users", "11", "--password", "x", "--store", "redis://127.0.0.1:1/0"}, "more than the 10 people seeded"},
		{[]string{"bench", "--seed-users", "-1", "--password", "x"}, "must be positive"},
	} {
		var out, errOut strings.Builder
		if err := run(context.Background(), c.args, nil, &out, &errOut); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q\n%s", c.args, err, c.want, out.String())
		}
	}
}

// TestBenchSeedsRedisThenMeasures follows the help's recipe at a small
// size on a real redis-server: stepupd bench --seed-users writes 50 people
// and an organization of 20 of them straight into the directory (a second
// run adds nothing), a stepupd on that Redis serves them, and bench runs
// the login scenario as seeded people and the members scenario as the
// organization's owner, with nothing but successes.
func TestBenchSeedsRedisThenMeasures(t *testing.T) {
	testenv.Require(t, "redis-server", "redis-server")
	store := "redis://" + testenv.StartRedis(t) + "/0"
	const password = "bench-password-1"
	ctx := context.Background()
	seed := []string{"bench", "--store", store, "--seed-users", "50", "--seed-org", "bench", "--seed-org-size", "20", "--password", password}
	for round, want := range []string{"(50 new)", "(0 new)"} {
		var out, errOut strings.Builder
		if err := run(ctx, seed, nil, &out, &errOut); err != nil {
			t.Fatalf("seeding, round %d: %v\n%s", round, err, errOut.String())
		}
		if !strings.Contains(out.String(), "Seeded 50 people "+want) ||
			!strings.Contains(out.String(), "Organization bench: 20 members "+strings.Replace(want, "50", "20", 1)+" in") ||
			!strings.Contains(out.String(), "bench0000000 owns it") {
			t.Errorf("seeding, round %d, said:\n%s", round, out.String())
		}
	}

	// What the server will read, read as it reads it.
	st, err := openStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := directory.New(st, nil)
	for _, i := range []int{0, 25, 49} {
		u, err := d.ByUsername(ctx, load.SeedUsername(i))
		if err != nil || u.ID != load.SeedID(i) || !authz.CheckPassword(u.PasswordHash, password) {
			t.Fatalf("seeded person %d: %+v, %v", i, u, err)
		}
	}
	if _, err := d.ByUsername(ctx, load.SeedUsername(50)); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("a 51st person: %v", err)
	}
	if n, err := d.MemberCount(ctx, "bench"); err != nil || n != 20 {
		t.Fatalf("the organization has %d members (%v), want 20", n, err)
	}
	if role, err := d.Role(ctx, "bench", load.SeedID(0)); err != nil || role != directory.RoleOwner {
		t.Errorf("bench0000000 is %q of bench (%v), want owner", role, err)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := filepath.Join(t.TempDir(), "stepup.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
issuer: http://%s
store: %s
secret: bench-test-secret-0123456789abcdef
clients:
  - id: stepup-cli
    public: true
    redirect_uris: ["http://127.0.0.1/callback"]
    scopes: [openid, offline_access, profile, email]
`, addr, store)), 0o600); err != nil {
		t.Fatal(err)
	}
	serveInProcess(t, "--config", cfg, "--addr", addr)
	waitReady(t, "http://"+addr)

	var out, errOut strings.Builder
	err = run(ctx, []string{"bench", "--url", "http://" + addr, "--duration", "1s", "--concurrency", "2",
		"--password", password, "--login-users", "50", "--org", "bench", "--scenarios", "login,members"}, nil, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, errOut.String(), out.String())
	}
	if !strings.Contains(errOut.String(), "user bench0000000; logins as bench0000000 … bench0000049 at random") {
		t.Errorf("bench did not say whom it logs in as:\n%s", errOut.String())
	}
	for _, name := range []string{load.Login, load.Members} {
		counts := line(out.String(), "  "+name+" ")
		if kinds := strings.Fields(counts[strings.Index(counts, "ops:")+4:]); len(kinds) != 1 || !strings.HasPrefix(kinds[0], "2xx=") || kinds[0] == "2xx=0" {
			t.Errorf("%s: outcomes %v, want only successes\n%s", name, kinds, out.String())
		}
	}
	if !strings.Contains(out.String(), "members             ES256 verify = ") {
		t.Errorf("the members scenario has no raw cost:\n%s", out.String())
	}
}

// serveInProcess runs stepupd with args until the test ends.
func serveInProcess(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- run(ctx, args, nil, io.Discard, io.Discard) }()
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
}

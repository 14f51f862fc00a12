package testenv

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// recorder stands in for a test so that Require's skip and failure can be
// observed without ending the real test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestRequire(t *testing.T) {
	if path := Require(t, "sh", "dash"); path == "" {
		t.Fatal("Require(sh) returned no path")
	}

	const missing, pkg = "stepup-no-such-binary", "stepup-no-such-package"
	t.Run("missing/skips", func(t *testing.T) {
		t.Setenv("STEPUP_TEST_REQUIRE", "")
		r := &recorder{TB: t}
		Require(r, missing, pkg)
		if r.failed != "" || !strings.Contains(r.skipped, missing) || !strings.Contains(r.skipped, "apt-get install "+pkg) {
			t.Fatalf("skipped %q, failed %q; want a skip naming %s and %s", r.skipped, r.failed, missing, pkg)
		}
	})
	t.Run("missing/fails-in-ci", func(t *testing.T) {
		t.Setenv("STEPUP_TEST_REQUIRE", "all")
		r := &recorder{TB: t}
		Require(r, missing, pkg)
		if r.skipped != "" || !strings.Contains(r.failed, missing) || !strings.Contains(r.failed, pkg) {
			t.Fatalf("skipped %q, failed %q; want a failure naming %s and %s", r.skipped, r.failed, missing, pkg)
		}
	})
}

func TestFreePort(t *testing.T) {
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
}

func TestStartRedis(t *testing.T) {
	addr := StartRedis(t)
	if reply, err := command(addr, "PING"); err != nil || reply != "PONG" {
		t.Fatalf("PING %s = %q, %v", addr, reply, err)
	}
	// No persistence: a test's data must not outlive it on disk.
	for param, want := range map[string]string{"save": "", "appendonly": "no"} {
		if got := configGet(t, addr, param); got != want {
			t.Errorf("CONFIG GET %s = %q, want %q", param, got, want)
		}
	}
}

func TestStartRedisCluster(t *testing.T) {
	addrs := StartRedisCluster(t)
	if len(addrs) != 3 {
		t.Fatalf("StartRedisCluster returned %v, want 3 addresses", addrs)
	}
	for _, addr := range addrs {
		info, err := command(addr, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
			t.Fatalf("CLUSTER INFO on %s: %v\n%s", addr, err, info)
		}
	}
}

// configGet reads one setting through redis-cli, since command only
// understands flat replies.
func configGet(t *testing.T, addr, param string) string {
	t.Helper()
	cli := Require(t, "redis-cli", "redis-tools")
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command(cli, "-h", host, "-p", port, "--raw", "CONFIG", "GET", param).Output()
	if err != nil {
		t.Fatalf("redis-cli CONFIG GET %s: %v", param, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 2 || lines[0] != param {
		t.Fatalf("redis-cli CONFIG GET %s: %q", param, out)
	}
	return lines[1]
}

// TestDurableRedisKeepsAcknowledgedWrites: what was written before a
// SIGKILL is there after the restart.
func TestDurableRedisKeepsAcknowledgedWrites(t *testing.T) {
	r := StartDurableRedis(t)
	if reply, err := command(r.Addr, "SET", "k", "v1"); err != nil || reply != "OK" {
		t.Fatalf("SET: %q %v", reply, err)
	}
	r.Kill()
	if _, err := command(r.Addr, "PING"); err == nil {
		t.Fatal("redis-server answers after Kill")
	}
	r.Restart()
	if reply, err := command(r.Addr, "GET", "k"); err != nil || reply != "v1" {
		t.Fatalf("GET after restart: %q %v", reply, err)
	}
}

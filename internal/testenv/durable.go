package testenv

import (
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DurableRedis is a redis-server that a test can kill and start again on
// the same port and data, configured as a production Redis must be for
// Stepup not to lose what it acknowledged: every write is appended to the
// log and fsynced before the reply (appendfsync always).
type DurableRedis struct {
	Addr string
	t    testing.TB
	bin  string
	port int
	dir  string
}

// StartDurableRedis starts one on a free loopback port; it is stopped in
// t.Cleanup.
func StartDurableRedis(t testing.TB) *DurableRedis {
	t.Helper()
	r := &DurableRedis{t: t, bin: Require(t, "redis-server", "redis-server"), dir: t.TempDir()}
	r.Addr = startServer(t, r.bin, FreePort, r.args())
	_, port, _ := net.SplitHostPort(r.Addr)
	r.port, _ = strconv.Atoi(port)
	return r
}

func (r *DurableRedis) args() []string {
	// Later arguments override the defaults startServer gives.
	return []string{"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir}
}

// Kill ends the server with SIGKILL, as a crash would, and waits until its
// port refuses connections.
func (r *DurableRedis) Kill() {
	r.t.Helper()
	info, err := command(r.Addr, "INFO", "server")
	if err != nil {
		r.t.Fatalf("testenv: asking redis-server for its pid: %v", err)
	}
	pid := 0
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 0 {
		r.t.Fatalf("testenv: no process_id in INFO server: %q", info)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		r.t.Fatalf("testenv: killing redis-server %d: %v", pid, err)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			r.t.Fatalf("testenv: redis-server on %s still answers after SIGKILL", r.Addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart starts the server again on its port and data directory and
// waits until it answers PING (having replayed its append-only file).
func (r *DurableRedis) Restart() {
	r.t.Helper()
	addr := startServer(r.t, r.bin, func(testing.TB) int { return r.port }, r.args())
	if addr != r.Addr {
		r.t.Fatalf("testenv: redis-server came back on %s, not %s", addr, r.Addr)
	}
}

package compare

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

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

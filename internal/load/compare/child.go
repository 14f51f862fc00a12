package compare

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is one side's process. Its output goes to a file, which costs the
// comparison's own process nothing while the load runs.
type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's, once done is closed
	// grace is how long stop waits after SIGTERM before it kills.
	grace time.Duration
}

func startChild(exe string, args []string, logPath string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the process has its own copy
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// STEPUP_* variables would change the stepupd side's config.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STEPUP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, log: logPath, done: make(chan struct{}), grace: 10 * time.Second}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) waitHealthy(ctx context.Context, base string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return fmt.Errorf("exited before answering /healthz (%v)%s", c.err, c.tail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer from %s/healthz within 30s%s", base, c.tail())
		}
	}
}

// stop ends the process as an orchestrator would, with SIGTERM, and kills
// it if it has not exited within grace. It may be called again.
func (c *child) stop() error {
	if c.exited() {
		return c.exitErr()
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = c.cmd.Process.Kill()
	}
	select {
	case <-c.done:
		return c.exitErr()
	case <-time.After(c.grace):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("did not exit within %s of SIGTERM; killed", c.grace)
	}
}

func (c *child) exitErr() error {
	if c.err != nil {
		return fmt.Errorf("exited: %w", c.err)
	}
	return nil
}

// tail is the end of the process's output, for error messages.
func (c *child) tail() string {
	b, err := os.ReadFile(c.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-15):]
	return "; its last output:\n  " + strings.Join(lines, "\n  ")
}

// memStatus reads a process's VmRSS and VmHWM in kB from /proc, -1 where
// there is no /proc (not Linux).
func memStatus(pid int) (rss, peak int64) {
	rss, peak = -1, -1
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			continue
		}
		if name == "VmRSS" {
			rss = n
		} else {
			peak = n
		}
	}
	return
}

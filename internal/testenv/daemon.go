package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// daemon is a server a test starts on a loopback port and stops in
// t.Cleanup: redis-server, sshd.
type daemon struct {
	name     string
	pickPort func(testing.TB) int
	// command builds the process for one attempt on port; its output goes
	// to a log that failures quote.
	command func(port int) *exec.Cmd
	// probe reports nil once the server at addr is ready for the test.
	probe func(addr string) error
	// kill ends the process and whatever it started; Process.Kill if nil.
	kill func(*exec.Cmd)
}

// errExited: the daemon stopped before it was ready.
var errExited = errors.New("exited")

// start runs the daemon and waits until it is ready. Another process may
// take the port between choosing it and the daemon binding it, so one that
// exits before it is ready is started again on another port.
func (d daemon) start(t testing.TB) (addr, logPath string) {
	t.Helper()
	const tries = 3
	var lastErr error
	for try := 1; try <= tries; try++ {
		port := d.pickPort(t)
		addr = "127.0.0.1:" + strconv.Itoa(port)
		logPath = filepath.Join(t.TempDir(), d.name+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		cmd := d.command(port)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			logFile.Close()
			t.Fatalf("testenv: starting %s: %v", d.name, err)
		}
		exited := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); logFile.Close(); close(exited) }()
		t.Cleanup(func() {
			if d.kill != nil {
				d.kill(cmd)
			} else {
				_ = cmd.Process.Kill()
			}
			<-exited
		})

		err = d.waitReady(addr, exited, &waitErr)
		if err == nil {
			return addr, logPath
		}
		lastErr = fmt.Errorf("%w; its log (%s) ends:\n%s", err, logPath, tailFile(logPath))
		if !errors.Is(err, errExited) || try == tries {
			break
		}
		t.Logf("testenv: %s on %s did not start, trying another port: %v", d.name, addr, lastErr)
	}
	t.Fatalf("testenv: %s did not come up: %v", d.name, lastErr)
	return "", ""
}

func (d daemon) waitReady(addr string, exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := d.probe(addr)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s %w before it was ready on %s: %v", d.name, errExited, addr, *waitErr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s on %s not ready within %v: %v", d.name, addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

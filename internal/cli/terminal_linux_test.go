package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// openPTY opens a pseudo-terminal: what the person sees is read from
// master, and slave is the terminal a program writes to.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	if err := ioctl(master, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	var n uint32
	if err := ioctl(master, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal's other end: %v", err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// TestPersonAt: a person is at the terminal only when both standard input
// (to be there at all) and standard error (to see the URL) are terminals;
// /dev/null is a character device, not a terminal.
func TestPersonAt(t *testing.T) {
	_, tty := openPTY(t)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	for _, c := range []struct {
		name   string
		stdin  io.Reader
		stderr io.Writer
		want   bool
	}{
		{"terminal", tty, tty, true},
		{"stdin /dev/null", devNull, tty, false},
		{"stdin a pipe", pr, tty, false},
		{"stdin a reader", strings.NewReader(""), tty, false},
		{"stderr a pipe", tty, pw, false},
		{"stderr /dev/null", tty, devNull, false},
		{"stderr a buffer", tty, &bytes.Buffer{}, false},
	} {
		if got := personAt(c.stdin, c.stderr); got != c.want {
			t.Errorf("%s: personAt = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNoTerminalPrintsLoginCommand runs the built stepup with standard
// input from /dev/null, as cron, CI and `</dev/null` do, and standard
// error on a terminal, against a real server whose organization demands a
// step-up: it prints the login command to run and exits 3 instead of
// waiting for a browser.
func TestNoTerminalPrintsLoginCommand(t *testing.T) {
	bin := buildBinary(t, "stepup")
	e := newEnv(t)
	e.mustRun("login")
	fakeSSH(t, `["mfa"]`, 5)
	// A browser started by mistake is noticed rather than opened.
	opener := t.TempDir()
	opened := filepath.Join(opener, "opened")
	if err := os.WriteFile(filepath.Join(opener, "xdg-open"), []byte("#!/bin/sh\necho \"$@\" >> "+opened+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := opener + string(os.PathListSeparator) + os.Getenv("PATH")

	for _, args := range [][]string{
		{"org:security", "acme"},
		{"ssh", "svc", "whoami", "--host", "gw.example.com"},
	} {
		t.Run(args[0], func(t *testing.T) {
			master, tty := openPTY(t)
			devNull, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			defer devNull.Close()
			// A safety net for a CLI that waits for the browser after all,
			// not a measure of its speed.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, &stdout, tty
			cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+e.dir, "STEPUP_URL="+e.issuer, "STEPUP_TOKEN=", "PATH="+path)
			seen := make(chan string, 1)
			go func() {
				// The terminal answers EIO once nobody holds its other end.
				b, _ := io.ReadAll(master)
				seen <- strings.ReplaceAll(string(b), "\r\n", "\n")
			}()
			err = cmd.Run()
			tty.Close()
			stderr := <-seen
			if ctx.Err() != nil {
				t.Fatalf("stepup %s was still running after 30s with stdin from /dev/null; stderr:\n%s", strings.Join(args, " "), stderr)
			}
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != ExitStepUp {
				t.Errorf("exit %d, want %d", code, ExitStepUp)
			}
			if !strings.Contains(stderr, "Additional authentication is required. Run:\n  stepup login --method mfa\n") {
				t.Errorf("stderr lacks the login command:\n%s", stderr)
			}
			if strings.Contains(stderr, "Waiting for the browser") || stdout.Len() != 0 {
				t.Errorf("stdout %q, stderr:\n%s", stdout.String(), stderr)
			}
			if b, err := os.ReadFile(opened); err == nil {
				t.Errorf("a browser was opened: %s", b)
			}
		})
	}
}

package main

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/testenv"
)

var printedCompleteURI = regexp.MustCompile(`^http://\S+/device\?user_code=[BCDFGHJKLMNPQRSTVWXZ-]+$`)

// TestDeviceLoginWithBinaries: the real stepup binary, given --device and
// no browser, against the real stepupd --dev. A person signs in on the
// page the printed URL leads to and allows it; the binary, polling, ends
// logged in with the tokens and a certificate.
func TestDeviceLoginWithBinaries(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := "http://" + addr
	p := start(t, nil, "--dev", "--addr", addr)
	var password string
	for deadline := time.Now().Add(15 * time.Second); password == ""; time.Sleep(20 * time.Millisecond) {
		if _, rest, ok := strings.Cut(p.output(), "alice   password: "); ok {
			password = strings.Fields(rest)[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no password printed:\n%s", p.output())
		}
	}
	waitReady(t, base)

	home := t.TempDir()
	cmd := exec.Command(buildCommand(t, "stepup"), "login", "--device")
	cmd.Env = append(os.Environ(), "STEPUP_URL="+base, "XDG_CONFIG_HOME="+home, "HOME="+home, "BROWSER=false")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout syncBuffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	uris := make(chan string, 1)
	var printed syncBuffer
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			printed.Write([]byte(s.Text() + "\n"))
			if printedCompleteURI.MatchString(s.Text()) {
				uris <- s.Text()
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var uri string
	select {
	case uri = <-uris:
	case err := <-exited:
		t.Fatalf("stepup login --device exited (%v) without printing the URL:\n%s", err, printed.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("stepup login --device printed no URL:\n%s", printed.String())
	}
	w := newWebClient(t, base)
	page := w.get(uri)
	if !strings.HasPrefix(page.url.Path, "/login") {
		t.Fatalf("the printed URL, signed out, leads to %s (%d)", page.url, page.status)
	}
	page = w.submit(page, "/login", url.Values{"username": {"alice"}, "password": {password}})
	if page.url.Path != "/device" || !strings.Contains(page.body, `value="allow"`) {
		t.Fatalf("after signing in: %s (%d): %s", page.url, page.status, page.body)
	}
	page = w.submit(page, "/device", url.Values{"decision": {"allow"}})
	if !strings.Contains(page.body, "You can return to your terminal.") {
		t.Fatalf("after allowing: %s (%d): %s", page.url, page.status, page.body)
	}
	select {
	case err := <-exited:
		if err != nil || !strings.Contains(stdout.String(), "Logged in as alice") {
			t.Fatalf("stepup login --device: %v\nstdout: %s\nstderr: %s", err, stdout.String(), printed.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("stepup login --device still polling after the login was allowed:\n%s", printed.String())
	}
	for _, f := range []string{"tokens.json", "id_ed25519-cert.pub"} {
		if _, err := os.Stat(home + "/stepup/" + f); err != nil {
			t.Errorf("after the device login: %v", err)
		}
	}
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestGracefulShutdown: on SIGTERM stepupd stops accepting connections at
// once, still answers a request that was in flight, and exits cleanly.
func TestGracefulShutdown(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := start(t, nil, "--dev", "--addr", addr)
	waitReady(t, "http://"+addr)

	// A request whose body is still on its way holds the handler.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const body = "grant_type=client_credentials"
	fmt.Fprintf(conn, "POST /oauth2/token HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
		addr, len(body), body[:10])
	time.Sleep(200 * time.Millisecond) // let the server read the headers and start the handler

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // no longer accepting
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("stepupd still accepts connections 5s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The request in flight is finished and answered.
	if _, err := conn.Write([]byte(body[10:])); err != nil {
		t.Fatalf("finishing the request in flight: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request in flight got no answer: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// No client credentials: the token endpoint's own refusal, not a 5xx.
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(answer), `"error":"invalid_request"`) {
		t.Errorf("the request in flight was answered %d %s, want the token endpoint's 400", resp.StatusCode, answer)
	}

	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("stepupd exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stepupd did not exit within 10s of finishing its last request")
	}
}

// Command healthcheck asks one URL and exits 0 when the answer is 2xx, 1
// otherwise. The stepupd image is distroless, with no shell, curl or wget,
// so a Docker or compose health check needs a binary of its own.
// Kubernetes probes ask over HTTP themselves and do not use it.
//
//	healthcheck http://127.0.0.1:8080/readyz
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: healthcheck URL")
		return 2
	}
	// Below the 3 s timeout deploy/compose.yaml gives the check, so a hung
	// server is reported here, with a reason, rather than killed by Docker.
	client := &http.Client{Timeout: 2500 * time.Millisecond}
	resp, err := client.Get(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "healthcheck: %s: %s %s\n", args[0], resp.Status, body)
		return 1
	}
	return 0
}

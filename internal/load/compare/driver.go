package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

// driver sends one scenario's load to one server.
type driver interface {
	name() string
	drive(ctx context.Context, base, scenario string, c credentials) (outcome, error)
}

func newDriver(o Options, dir string) driver {
	if !o.NoWrk {
		if path, err := exec.LookPath("wrk"); err == nil {
			d := &wrkDriver{path: path, dir: dir, concurrency: o.Concurrency,
				threads: min(o.Concurrency, runtime.NumCPU()), seconds: int(math.Ceil(o.Duration.Seconds()))}
			if time.Duration(d.seconds)*time.Second != o.Duration {
				fmt.Fprintf(o.Log, "stepupd compare: wrk runs whole seconds: %ds per scenario\n", d.seconds)
			}
			out, _ := exec.Command(path, "--version").CombinedOutput() // wrk exits 1 after its version
			if f := strings.Fields(string(out)); len(f) >= 2 {
				d.version = f[1]
			}
			return d
		}
	}
	return &loadDriver{concurrency: o.Concurrency, duration: o.Duration}
}

// loadDriver is stepupd's own load generator, as stepupd bench runs it.
type loadDriver struct {
	concurrency int
	duration    time.Duration
}

func (d *loadDriver) name() string {
	return "stepupd's load generator (internal/load, as stepupd bench)"
}

func (d *loadDriver) drive(ctx context.Context, base, scenario string, c credentials) (outcome, error) {
	// A transport per scenario, closed after it, so that no scenario
	// inherits the previous one's connections.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2 * d.concurrency,
		IdleConnTimeout:     90 * time.Second,
	}
	defer tr.CloseIdleConnections()
	rep, err := load.Run(ctx, load.Options{URL: base, Scenarios: []string{scenario}, Concurrency: d.concurrency,
		Duration: d.duration, ClientID: c.id, ClientSecret: c.secret, SkipBaseline: true,
		HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}})
	if err != nil {
		return outcome{}, err
	}
	s, ok := rep.Scenario(scenario)
	if !ok {
		return outcome{}, errors.New("the load generator reported nothing")
	}
	return outcome{ops: s.Ops, ok: s.OK, elapsed: s.Elapsed, p50: s.Latency.P50, p99: s.Latency.P99,
		counts: s.Counts, samples: s.Samples}, nil
}

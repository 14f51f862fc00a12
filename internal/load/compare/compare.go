// Package compare measures stepupd beside bare fosite on one machine, under
// the same load: it starts a fresh process of each side per run, drives each
// through the same scenarios with wrk or internal/load, and prints the
// ratios and issue 17's goals. The command that runs it supplies the binary
// and the arguments that make it serve either side, so that both sides come
// from one build and share one fosite.
package compare

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

// ClientID is the confidential client both sides are given.
const ClientID = "compare-service"

// Options is one comparison.
type Options struct {
	// Runs, each with a fresh process of each side; Concurrency clients
	// (connections); Duration of each scenario on each side. wrk runs whole
	// seconds, so it rounds Duration up.
	Runs, Concurrency int
	Duration          time.Duration
	// Scenarios in the order they run, among Scenarios(). Healthz is added
	// when missing: every other p99 is divided by its.
	Scenarios []string
	// NoWrk drives the load with internal/load even where wrk is on PATH.
	NoWrk bool

	// Executable is started for both sides, with ServeArgs(config) for
	// stepupd (the config file Run writes) and BaselineArgs for bare fosite.
	Executable   string
	ServeArgs    func(configFile string) []string
	BaselineArgs func(addr, clientID, clientSecret string) []string

	// Log gets a line as each run, side and scenario starts; nil discards.
	Log io.Writer
}

// descriptions are the scenarios Run knows, and what each sends.
var descriptions = map[string]string{
	load.ClientCredentials: "POST /oauth2/token, grant_type=client_credentials, client_secret_basic",
	load.Introspect:        "POST /oauth2/introspect of a client_credentials access token, by its client (Basic)",
	load.Healthz:           "GET /healthz",
}

// Scenarios are the scenarios Run knows, in the order it runs them by
// default.
func Scenarios() []string {
	return []string{load.ClientCredentials, load.Introspect, load.Healthz}
}

// ParseScenarios reads a comma-separated list of scenarios, as Options
// takes them: each once, in the order given, Healthz added at the end when
// missing.
func ParseScenarios(list string) ([]string, error) {
	return scenarioList(strings.Split(list, ","))
}

func scenarioList(names []string) ([]string, error) {
	var out []string
	for _, s := range names {
		s = strings.TrimSpace(s)
		if _, ok := descriptions[s]; !ok {
			return nil, fmt.Errorf("compare: unknown scenario %q (scenarios: %s)", s, strings.Join(Scenarios(), ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if !slices.Contains(out, load.Healthz) {
		out = append(out, load.Healthz)
	}
	return out, nil
}

func (o *Options) validate() error {
	switch {
	case o.Runs < 1 || o.Concurrency < 1 || o.Duration <= 0:
		return errors.New("compare: Runs and Concurrency must be at least 1 and Duration positive")
	case o.Executable == "" || o.ServeArgs == nil || o.BaselineArgs == nil:
		return errors.New("compare: Executable, ServeArgs and BaselineArgs are needed to start the sides")
	}
	var err error
	o.Scenarios, err = scenarioList(o.Scenarios)
	return err
}

const (
	sideStepupd  = "stepupd"
	sideBaseline = "baseline"
)

var sides = []string{sideStepupd, sideBaseline}

// Run compares the two sides and writes the report to stdout. When a run
// fails, the runs before it are reported and the error says which failed.
func Run(ctx context.Context, o Options, stdout io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	dir, err := os.MkdirTemp("", "stepupd-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	drv := newDriver(o, dir)

	fmt.Fprintf(o.Log, "stepupd compare: %d run(s), %d clients, %s per scenario (%s), load by %s\n",
		o.Runs, o.Concurrency, o.Duration, strings.Join(o.Scenarios, ", "), drv.name())
	var runs []runResult
	for i := range o.Runs {
		order := slices.Clone(sides)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		rr := runResult{first: order[0], sides: map[string]sideRun{}}
		for _, side := range order {
			sr, err := runSide(ctx, dir, side, i+1, o, drv)
			if err != nil {
				err = fmt.Errorf("compare: run %d, %s: %w", i+1, side, err)
				if len(runs) > 0 {
					fmt.Fprintf(stdout, "Stopped in run %d; the runs before it:\n\n", i+1)
					_ = writeComparison(stdout, o, drv.name(), runs)
				}
				return err
			}
			rr.sides[side] = sr
		}
		// Timed between runs, with neither side running.
		if ctx.Err() == nil {
			rr.raw = load.RawCost(load.ClientCredentials)
		}
		runs = append(runs, rr)
	}
	return writeComparison(stdout, o, drv.name(), runs)
}

// runResult is one run: both sides, and the raw crypto timed after them.
type runResult struct {
	first string
	sides map[string]sideRun
	raw   load.Baseline
}

// sideRun is one side's fresh process in one run.
type sideRun struct {
	results map[string]outcome
	// Resident memory in kB, -1 where unknown: once /healthz answered, after
	// the last scenario, and the peak (VmHWM).
	rssStart, rssEnd, rssPeak int64
}

// outcome is one scenario on one side in one run.
type outcome struct {
	ops, ok  int
	elapsed  time.Duration
	p50, p99 time.Duration
	// counts is ops by kind, named as internal/load names them (2xx,
	// 4xx:401, 503, transport, invalid, …); samples holds an example of
	// each failing kind, where the driver has one.
	counts  map[string]int
	samples map[string]string
}

func (o outcome) rate() float64 {
	if o.elapsed <= 0 {
		return 0
	}
	return float64(o.ok) / o.elapsed.Seconds()
}

type credentials struct{ id, secret string }

// runSide starts a fresh process of side, drives each scenario through it
// and stops it.
func runSide(ctx context.Context, dir, side string, run int, o Options, drv driver) (sideRun, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return sideRun{}, err
	}
	creds := credentials{id: ClientID, secret: newSecret()}
	var args []string
	switch side {
	case sideStepupd:
		cfg := filepath.Join(dir, fmt.Sprintf("run%d-stepupd.yaml", run))
		if err := os.WriteFile(cfg, []byte(stepupdConfig(addr, creds)), 0o600); err != nil {
			return sideRun{}, err
		}
		args = o.ServeArgs(cfg)
	case sideBaseline:
		args = o.BaselineArgs(addr, creds.id, creds.secret)
	}
	logPath := filepath.Join(dir, fmt.Sprintf("run%d-%s.log", run, side))
	c, err := startChild(o.Executable, args, logPath)
	if err != nil {
		return sideRun{}, err
	}
	defer c.stop()
	base := "http://" + addr
	if err := c.waitHealthy(ctx, base); err != nil {
		return sideRun{}, err
	}
	sr := sideRun{results: map[string]outcome{}}
	sr.rssStart, _ = memStatus(c.pid())
	for _, sc := range o.Scenarios {
		fmt.Fprintf(o.Log, "stepupd compare: run %d of %d, %s (pid %d): %s\n", run, o.Runs, side, c.pid(), sc)
		out, err := drv.drive(ctx, base, sc, creds)
		if c.exited() {
			return sr, fmt.Errorf("%s exited during %s%s", side, sc, c.tail())
		}
		if err != nil {
			return sr, fmt.Errorf("%s: %w%s", sc, err, c.tail())
		}
		sr.results[sc] = out
	}
	sr.rssEnd, sr.rssPeak = memStatus(c.pid())
	if err := c.stop(); err != nil {
		fmt.Fprintf(o.Log, "stepupd compare: run %d, %s: %v%s\n", run, side, err, c.tail())
	} else {
		os.Remove(logPath) // stepupd's access log: tens of MB a run
	}
	return sr, nil
}

// stepupdConfig is the stepupd side's config: the memory store (like
// fosite's), ES256 access tokens (like the baseline's), and the client both
// sides have.
func stepupdConfig(addr string, c credentials) string {
	return fmt.Sprintf(`# Written by stepupd compare for one run.
issuer: http://%s
addr: %s
store: memory
tokens:
  signing_alg: ES256
clients:
  - id: %s
    secret: %s
    grant_types: [client_credentials]
    scopes: [access.read]
`, addr, addr, strconv.Quote(c.id), strconv.Quote(c.secret))
}

// newSecret is a client secret like those stepupd makes (32 random bytes,
// base64url), so that both sides hash what a deployment's clients send.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// freeLoopbackAddr is a loopback port nothing listens on now. Another
// program could take it before the side does; the side then fails to
// start, and says so.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

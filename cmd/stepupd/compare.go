package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/internal/load"
	"github.com/stepup-dev/stepup/internal/load/barefosite"
)

const compareUsage = `Usage: stepupd compare [flags]

Measures stepupd beside bare fosite on this machine, under the same load,
and prints the ratios. Each run starts a fresh process of each side from
this very binary (so both have the same fosite), one side after the other,
alternating which goes first:

  stepupd   "stepupd serve" on a memory store with one confidential client
            (it logs every request, as a deployment does, to a file)
  baseline  "stepupd baseline": fosite as its documentation composes it,
            its own memory store, ES256 JWT access tokens, OpenID Connect,
            PKCE, the same SHA-256 client-secret hashing; it logs nothing

Once a side answers GET /healthz, the same load drives it through each
scenario in turn for --duration, then the process is stopped. /healthz is
always among the scenarios: its p99 is the floor of that side's latencies
in that run, which the other scenarios' p99 are divided by.

Scenarios:
  client_credentials  POST /oauth2/token, grant_type=client_credentials
                      (client_secret_basic)
  introspect          POST /oauth2/introspect of a client_credentials
                      access token, by its client
  healthz             GET /healthz

The load is wrk, with a Lua script per scenario, when wrk is on PATH and
--wrk is auto; else stepupd's own load generator (as stepupd bench). Either
shares the CPUs with the server it drives.

Flags:
`

// The scenarios compare knows, and what each sends.
var compareScenarios = map[string]string{
	load.ClientCredentials: "POST /oauth2/token, grant_type=client_credentials, client_secret_basic",
	load.Introspect:        "POST /oauth2/introspect of a client_credentials access token, by its client (Basic)",
	load.Healthz:           "GET /healthz",
}

const (
	sideStepupd  = "stepupd"
	sideBaseline = "baseline"
	// compareClient is the confidential client of both sides.
	compareClient = "compare-service"
)

var sides = []string{sideStepupd, sideBaseline}

type compareOptions struct {
	runs, concurrency int
	duration          time.Duration
	// scenarios in the order they run; load.Healthz is always one.
	scenarios []string
	wrk       string
}

// compare runs stepupd and bare fosite side by side (see compareUsage).
func compare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseCompareFlags(args, stderr)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("compare: cannot find this binary to start its sides: %w", err)
	}
	dir, err := os.MkdirTemp("", "stepupd-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	drv := newDriver(o, dir, stderr)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(stderr, "stepupd compare: %d run(s), %d clients, %s per scenario (%s), load by %s\n",
		o.runs, o.concurrency, o.duration, strings.Join(o.scenarios, ", "), drv.name())
	var runs []runResult
	for i := range o.runs {
		order := slices.Clone(sides)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		rr := runResult{first: order[0], sides: map[string]sideRun{}}
		for _, side := range order {
			sr, err := runSide(ctx, exe, dir, side, i+1, o, drv, stderr)
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
		rr.raw = rawSignCost(ctx)
		runs = append(runs, rr)
	}
	return writeComparison(stdout, o, drv.name(), runs)
}

func parseCompareFlags(args []string, stderr io.Writer) (compareOptions, error) {
	fs := flag.NewFlagSet("stepupd compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), compareUsage)
		fs.PrintDefaults()
	}
	o := compareOptions{}
	var scenarios string
	fs.IntVar(&o.runs, "runs", 3, "runs, each with a fresh process of each side")
	fs.IntVar(&o.concurrency, "concurrency", 16, "concurrent clients (connections)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each scenario runs on each side (wrk: whole seconds, rounded up)")
	fs.StringVar(&scenarios, "scenarios", "client_credentials,introspect,healthz", "comma-separated `list`: client_credentials, introspect, healthz (healthz is always run)")
	fs.StringVar(&o.wrk, "wrk", "auto", "auto: drive the load with wrk when it is on PATH; never: with stepupd's own load generator")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("compare: unexpected argument %q", fs.Arg(0))
	case o.runs < 1 || o.concurrency < 1 || o.duration <= 0:
		return o, errors.New("compare: --runs and --concurrency must be at least 1 and --duration positive")
	case o.wrk != "auto" && o.wrk != "never":
		return o, fmt.Errorf("compare: --wrk %q: give auto or never", o.wrk)
	}
	for _, s := range strings.Split(scenarios, ",") {
		s = strings.TrimSpace(s)
		if _, ok := compareScenarios[s]; !ok {
			return o, fmt.Errorf("compare: unknown scenario %q (scenarios: client_credentials, introspect, healthz)", s)
		}
		if !slices.Contains(o.scenarios, s) {
			o.scenarios = append(o.scenarios, s)
		}
	}
	if !slices.Contains(o.scenarios, load.Healthz) {
		o.scenarios = append(o.scenarios, load.Healthz)
	}
	return o, nil
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

// runSide starts a fresh process of side, drives each scenario through it
// and stops it.
func runSide(ctx context.Context, exe, dir, side string, run int, o compareOptions, drv driver, stderr io.Writer) (sideRun, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return sideRun{}, err
	}
	creds := credentials{id: compareClient, secret: randomSecret()}
	var args []string
	switch side {
	case sideStepupd:
		cfg := filepath.Join(dir, fmt.Sprintf("run%d-stepupd.yaml", run))
		if err := os.WriteFile(cfg, []byte(stepupdCompareConfig(addr, creds)), 0o600); err != nil {
			return sideRun{}, err
		}
		args = []string{"serve", "--config", cfg}
	case sideBaseline:
		args = []string{"baseline", "--addr", addr, "--client-id", creds.id, "--client-secret", creds.secret}
	}
	logPath := filepath.Join(dir, fmt.Sprintf("run%d-%s.log", run, side))
	c, err := startChild(exe, args, logPath)
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
	for _, sc := range o.scenarios {
		fmt.Fprintf(stderr, "stepupd compare: run %d of %d, %s (pid %d): %s\n", run, o.runs, side, c.pid(), sc)
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
		fmt.Fprintf(stderr, "stepupd compare: run %d, %s: %v%s\n", run, side, err, c.tail())
	} else {
		os.Remove(logPath) // stepupd's access log: tens of MB a run
	}
	return sr, nil
}

// stepupdCompareConfig is the stepupd side's config: the memory store
// (like fosite's), ES256 access tokens (like the baseline's), and the
// client both sides have.
func stepupdCompareConfig(addr string, c credentials) string {
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

// rawSignCost is one ES256 signature of an access token, timed the way
// stepupd bench times the raw crypto of a client_credentials token: the
// code that does it (internal/load's baseline) is reached through load.Run,
// which with no time to run sends nothing and still times it.
func rawSignCost(ctx context.Context) load.Baseline {
	rep, _ := load.Run(ctx, load.Options{URL: "http://127.0.0.1:1", Scenarios: []string{load.ClientCredentials},
		Concurrency: 1, Duration: time.Nanosecond, ClientID: "-", ClientSecret: "-"})
	s, _ := rep.Scenario(load.ClientCredentials)
	return s.Baseline
}

type credentials struct{ id, secret string }

// driver sends one scenario's load to one server.
type driver interface {
	name() string
	drive(ctx context.Context, base, scenario string, c credentials) (outcome, error)
}

func newDriver(o compareOptions, dir string, stderr io.Writer) driver {
	if o.wrk == "auto" {
		if path, err := exec.LookPath("wrk"); err == nil {
			d := &wrkDriver{path: path, dir: dir, concurrency: o.concurrency,
				threads: min(o.concurrency, runtime.NumCPU()), seconds: int(math.Ceil(o.duration.Seconds()))}
			if time.Duration(d.seconds)*time.Second != o.duration {
				fmt.Fprintf(stderr, "stepupd compare: wrk runs whole seconds: %ds per scenario\n", d.seconds)
			}
			out, _ := exec.Command(path, "--version").CombinedOutput() // wrk exits 1 after its version
			if f := strings.Fields(string(out)); len(f) >= 2 {
				d.version = f[1]
			}
			return d
		}
	}
	return &loadDriver{concurrency: o.concurrency, duration: o.duration}
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

// wrkDriver runs wrk with a Lua script that sends the scenario's request
// and sorts every answer into internal/load's kinds, checking a 2xx body
// for what the scenario needs (a token, an active introspection).
type wrkDriver struct {
	path, version, dir   string
	concurrency, threads int
	seconds              int
}

func (d *wrkDriver) name() string {
	return fmt.Sprintf("wrk %s (%d threads; a Lua script per scenario)", d.version, d.threads)
}

// wrkRequest is what the script sends, and what a usable 2xx body holds.
type wrkRequest struct {
	method, path, body string
	headers            map[string]string
	expect             string
}

func (d *wrkDriver) drive(ctx context.Context, base, scenario string, c credentials) (outcome, error) {
	req, err := newWRKRequest(ctx, base, scenario, c)
	if err != nil {
		return outcome{}, err
	}
	script := filepath.Join(d.dir, scenario+".lua")
	if err := os.WriteFile(script, []byte(wrkScript(req)), 0o600); err != nil {
		return outcome{}, err
	}
	cmd := exec.CommandContext(ctx, d.path, "-t", strconv.Itoa(d.threads), "-c", strconv.Itoa(d.concurrency),
		"-d", strconv.Itoa(d.seconds)+"s", "--timeout", "30s", "-s", script, base+req.path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return outcome{}, fmt.Errorf("wrk: %v: %s%s", err, stderr.Bytes(), out)
	}
	return parseWRK(out)
}

func newWRKRequest(ctx context.Context, base, scenario string, c credentials) (wrkRequest, error) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.id)+":"+url.QueryEscape(c.secret)))
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic}
	switch scenario {
	case load.ClientCredentials:
		return wrkRequest{method: http.MethodPost, path: "/oauth2/token", body: "grant_type=client_credentials",
			headers: form, expect: `"access_token"`}, nil
	case load.Introspect:
		cc := clientcredentials.Config{ClientID: c.id, ClientSecret: c.secret, TokenURL: base + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader}
		tok, err := cc.Token(ctx)
		if err != nil {
			return wrkRequest{}, fmt.Errorf("a token to introspect: %w", err)
		}
		body := url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}}.Encode()
		return wrkRequest{method: http.MethodPost, path: "/oauth2/introspect", body: body,
			headers: form, expect: `"active":true`}, nil
	case load.Healthz:
		return wrkRequest{method: http.MethodGet, path: "/healthz"}, nil
	}
	return wrkRequest{}, fmt.Errorf("no wrk request for scenario %q", scenario)
}

// wrkScript is the Lua script for one scenario. Each wrk thread counts its
// answers by kind and keeps the first body of each failing kind; done()
// adds the threads up and prints one "stepup-wrk" line of totals, a
// "stepup-wrk-kind" line per kind and a "stepup-wrk-sample" line per
// failing kind, which parseWRK reads.
func wrkScript(r wrkRequest) string {
	var b strings.Builder
	b.WriteString("-- Written by stepupd compare for one scenario.\n")
	fmt.Fprintf(&b, "wrk.method = %s\n", strconv.Quote(r.method))
	if r.body != "" {
		fmt.Fprintf(&b, "wrk.body = %s\n", strconv.Quote(r.body))
	}
	for _, k := range slices.Sorted(maps.Keys(r.headers)) {
		fmt.Fprintf(&b, "wrk.headers[%s] = %s\n", strconv.Quote(k), strconv.Quote(r.headers[k]))
	}
	fmt.Fprintf(&b, "local expect = %s\n", strconv.Quote(r.expect))
	b.WriteString(`local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  kinds = {}
  samples = {}
end

function response(status, headers, body)
  local kind
  if status >= 200 and status < 300 then
    if expect == "" or string.find(body, expect, 1, true) then kind = "2xx" else kind = "invalid" end
  elseif status == 503 then kind = "503"
  elseif status >= 500 then kind = "5xx:" .. status
  elseif status >= 400 then kind = "4xx:" .. status
  else kind = "invalid" end
  kinds[kind] = (kinds[kind] or 0) + 1
  if kind ~= "2xx" and samples[kind] == nil then
    samples[kind] = status .. " " .. string.gsub(string.sub(body or "", 1, 300), "%c", " ")
  end
end

function done(summary, latency, requests)
  local kinds, samples = {}, {}
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("kinds") or {}) do kinds[k] = (kinds[k] or 0) + n end
    for k, s in pairs(t:get("samples") or {}) do samples[k] = samples[k] or s end
  end
  local e = summary.errors
  io.write(string.format("stepup-wrk duration_us=%.0f requests=%.0f transport=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.duration, summary.requests, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
  for k, n in pairs(kinds) do io.write(string.format("stepup-wrk-kind %s %.0f\n", k, n)) end
  for k, s in pairs(samples) do io.write(string.format("stepup-wrk-sample %s %s\n", k, s)) end
end
`)
	return b.String()
}

// parseWRK reads what wrkScript's done() printed.
func parseWRK(out []byte) (outcome, error) {
	o := outcome{counts: map[string]int{}, samples: map[string]string{}}
	seen := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "stepup-wrk":
			seen = true
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return o, fmt.Errorf("wrk: bad %q in %q", kv, sc.Text())
				}
				switch k {
				case "duration_us":
					o.elapsed = time.Duration(n) * time.Microsecond
				case "transport":
					if n > 0 {
						o.counts[load.KindTransport] = int(n)
					}
				case "p50_us":
					o.p50 = time.Duration(n) * time.Microsecond
				case "p99_us":
					o.p99 = time.Duration(n) * time.Microsecond
				}
			}
		case "stepup-wrk-kind":
			if len(f) != 3 {
				return o, fmt.Errorf("wrk: bad line %q", sc.Text())
			}
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return o, fmt.Errorf("wrk: bad line %q", sc.Text())
			}
			o.counts[f[1]] += n
		case "stepup-wrk-sample":
			if len(f) >= 2 {
				o.samples[f[1]] = strings.Join(f[2:], " ")
			}
		}
	}
	if !seen {
		return o, fmt.Errorf("wrk printed no totals; its output:\n%s", out)
	}
	for _, n := range o.counts {
		o.ops += n
	}
	o.ok = o.counts[load.KindOK]
	return o, nil
}

// compareLegend explains writeComparison's columns.
const compareLegend = `  ok/s     successful operations a second: a 2xx with what the scenario needs (a token, "active":true).
  p50 p99  latency; stepupd's load generator times the successful operations, wrk every answer.
  hz p99   the same side's GET /healthz p99 in the same run: the floor of its latencies there.
  p99/hz   p99 ÷ hz p99.
  not ok   operations that did not succeed, listed by kind under "Outcomes".
  vs base  stepupd's ok/s ÷ bare fosite's in the same run.
  median   the median of each column over the runs; of a ratio, the median of the per-run ratios;
           not ok is the sum over the runs.
`

// writeComparison prints a table per scenario, issue 17's goals, the raw
// crypto, memory and every outcome.
func writeComparison(w io.Writer, o compareOptions, loadName string, runs []runResult) error {
	var b strings.Builder
	version := barefosite.FositeVersion()
	if version == "" {
		version = "(version unknown)"
	}
	var order []string
	for i, r := range runs {
		order = append(order, fmt.Sprintf("run %d %s", i+1, r.first))
	}
	fmt.Fprintf(&b, "stepupd compare: stepupd (memory store) against bare fosite %s (its memory store), both from this binary,\n", version)
	fmt.Fprintf(&b, "a fresh process of each side per run; %d run(s), first to go: %s.\n", len(runs), strings.Join(order, ", "))
	fmt.Fprintf(&b, "%d concurrent clients, %s per scenario, one scenario at a time. Load: %s,\n", o.concurrency, o.duration, loadName)
	fmt.Fprintf(&b, "on the same %d CPUs as the server it drives; %s.\n", runtime.NumCPU(), runtime.Version())
	b.WriteString(compareLegend)

	const row = "  %-6s %-8s %9s %8s %8s %8s %7s %7s %s\n"
	for _, sc := range o.scenarios {
		fmt.Fprintf(&b, "\n%s: %s\n", sc, compareScenarios[sc])
		fmt.Fprintf(&b, row, "run", "side", "ok/s", "p50", "p99", "hz p99", "p99/hz", "not ok", "vs base")
		type figures struct {
			rate, hzRatio, vs float64
			p50, p99, hz      time.Duration
			notOK             int
		}
		per := map[string][]figures{}
		for _, r := range runs {
			for _, side := range sides {
				out := r.sides[side].results[sc]
				f := figures{rate: out.rate(), p50: out.p50, p99: out.p99, notOK: out.ops - out.ok,
					hz: r.sides[side].results[load.Healthz].p99}
				if f.hz > 0 {
					f.hzRatio = float64(f.p99) / float64(f.hz)
				}
				if base := r.sides[sideBaseline].results[sc].rate(); side == sideStepupd && base > 0 {
					f.vs = f.rate / base
				}
				per[side] = append(per[side], f)
			}
		}
		line := func(run, side string, f figures) {
			vs := ""
			if side == sideStepupd {
				vs = fmtRatio(f.vs)
			}
			text := fmt.Sprintf(row, run, side, fmtRate(f.rate), fmtDuration(f.p50), fmtDuration(f.p99), fmtDuration(f.hz),
				fmtRatio(f.hzRatio), strconv.Itoa(f.notOK), vs)
			b.WriteString(strings.TrimRight(text, " \n") + "\n")
		}
		for _, side := range sides {
			fs := per[side]
			m := figures{
				rate:    median(pluck(fs, func(f figures) float64 { return f.rate })),
				hzRatio: median(pluck(fs, func(f figures) float64 { return f.hzRatio })),
				vs:      median(pluck(fs, func(f figures) float64 { return f.vs })),
				p50:     median(pluck(fs, func(f figures) time.Duration { return f.p50 })),
				p99:     median(pluck(fs, func(f figures) time.Duration { return f.p99 })),
				hz:      median(pluck(fs, func(f figures) time.Duration { return f.hz })),
			}
			for _, f := range fs {
				m.notOK += f.notOK
			}
			line("median", side, m)
		}
		for i := range runs {
			for _, side := range sides {
				line(strconv.Itoa(i+1), side, per[side][i])
			}
		}
	}

	b.WriteString("\nIssue 17's goals, on the medians of the per-run ratios:\n")
	goal := func(what string, x float64, met bool) {
		verdict := "not met"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(&b, "  %-66s %7s  %s\n", what, fmtRatio(x), verdict)
	}
	for _, sc := range o.scenarios {
		var vs, hz []float64
		for _, r := range runs {
			st, bs := r.sides[sideStepupd].results, r.sides[sideBaseline].results
			if base := bs[sc].rate(); base > 0 {
				vs = append(vs, st[sc].rate()/base)
			}
			if p := st[load.Healthz].p99; p > 0 {
				hz = append(hz, float64(st[sc].p99)/float64(p))
			}
		}
		if sc == load.ClientCredentials && len(vs) > 0 {
			m := median(vs)
			goal(sc+": stepupd's ok/s at least 1.3x bare fosite's", m, m >= 1.3)
		}
		if sc != load.Healthz && len(hz) > 0 {
			m := median(hz)
			goal(sc+": stepupd's p99 within 3x its /healthz p99", m, m <= 3)
		}
	}

	b.WriteString("\nRaw crypto, timed in this process between runs, one at a time on one core (as stepupd bench times it):\n")
	var raws []time.Duration
	var rawText []string
	what := ""
	for _, r := range runs {
		if r.raw.Cost > 0 {
			raws, what = append(raws, r.raw.Cost), r.raw.What
		}
		rawText = append(rawText, fmtDuration(r.raw.Cost))
	}
	if len(raws) > 0 {
		fmt.Fprintf(&b, "  %s of an access token: median %s (runs: %s); a client_credentials token costs one, an\n"+
			"  introspection one verification, which costs more.\n", what, fmtDuration(median(raws)), strings.Join(rawText, ", "))
	} else {
		b.WriteString("  not measured\n")
	}

	b.WriteString("\nMemory: VmRSS from /proc/PID/status, MiB, once /healthz answered and after the last scenario; peak is VmHWM.\n")
	const memRow = "  %-4s %-8s %12s %11s %8s\n"
	fmt.Fprintf(&b, memRow, "run", "side", "after start", "after load", "peak")
	for i, r := range runs {
		for _, side := range sides {
			sr := r.sides[side]
			fmt.Fprintf(&b, memRow, strconv.Itoa(i+1), side, fmtMiB(sr.rssStart), fmtMiB(sr.rssEnd), fmtMiB(sr.rssPeak))
		}
	}

	b.WriteString("\nOutcomes: every operation, by kind (2xx is a success; 4xx:STATUS, 503, 5xx:STATUS, transport, invalid are not).\n")
	for _, sc := range o.scenarios {
		name := sc
		for i, r := range runs {
			for _, side := range sides {
				out := r.sides[side].results[sc]
				fmt.Fprintf(&b, "  %-19s run %d %-8s %d ops: %s\n", name, i+1, side, out.ops, kindsText(out.counts))
				name = ""
				for _, k := range slices.Sorted(maps.Keys(out.samples)) {
					fmt.Fprintf(&b, "  %-19s       %-8s %s e.g.: %s\n", "", "", k, out.samples[k])
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func kindsText(counts map[string]int) string {
	if len(counts) == 0 {
		return "none"
	}
	ks := slices.Sorted(maps.Keys(counts))
	// Successes first.
	slices.SortStableFunc(ks, func(a, b string) int {
		switch {
		case a == load.KindOK && b != load.KindOK:
			return -1
		case b == load.KindOK && a != load.KindOK:
			return 1
		}
		return 0
	})
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}

func pluck[F, T any](fs []F, get func(F) T) []T {
	out := make([]T, len(fs))
	for i, f := range fs {
		out[i] = get(f)
	}
	return out
}

// median of xs, the mean of the middle two for an even count; zeros (not
// measured) are left out.
func median[T ~int64 | ~float64](xs []T) T {
	var s []T
	for _, x := range xs {
		if x != 0 {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtRate(x float64) string {
	switch {
	case x <= 0:
		return "0"
	case x < 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	digits := strconv.FormatFloat(x, 'f', 0, 64)
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtRatio(x float64) string {
	if x <= 0 {
		return "-"
	}
	return strconv.FormatFloat(x, 'f', 2, 64) + "x"
}

func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fmtMiB(kB int64) string {
	if kB < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(kB)/1024)
}

// baseline serves bare fosite, the comparison's other side.
func baseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stepupd baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: stepupd baseline [flags]

Serves bare fosite, composed as its documentation composes it (its memory
store, ES256 JWT access tokens, OpenID Connect, PKCE, client_credentials,
refresh, introspection) with one confidential client: POST /oauth2/token,
POST /oauth2/introspect and GET /healthz. The other side of stepupd compare.

Flags:
`)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:8081", "listen address (port 0 picks a free one; the address is printed)")
	id := fs.String("client-id", compareClient, "the confidential client's id")
	secret := fs.String("client-secret", "", "its secret (default: a random one, printed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("baseline: unexpected argument %q", fs.Arg(0))
	}
	shown := "(from --client-secret)"
	if *secret == "" {
		*secret = randomSecret()
		shown = *secret
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", *addr, err)
	}
	base := "http://" + ln.Addr().String()
	h, err := barefosite.New(barefosite.Config{Issuer: base, ClientID: *id, ClientSecret: *secret})
	if err != nil {
		ln.Close()
		return err
	}
	// serve's limits and timeouts, so that the two servers differ in their
	// handlers only.
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	version := barefosite.FositeVersion()
	if version == "" {
		version = "(version unknown)"
	}
	fmt.Fprintf(stdout, "bare fosite %s listening on %s\n  client: %s   secret: %s\n", version, base, *id, shown)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(shutdownCtx)
}

// Package load drives a running Stepup server over HTTP with concurrent
// clients and measures it: throughput, latency percentiles and outcomes
// counted by kind, scenario by scenario, beside the raw cost of the
// cryptography each operation cannot avoid.
//
// Scenarios run one after another, each for Options.Duration with
// Options.Concurrency workers. Per-worker setup (a login for a user's grant,
// a client's token) happens before a scenario's clock starts and is not
// counted. Workers stop starting operations at the deadline and let those in
// flight finish; cancelling the context aborts at once.
package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scenario names.
const (
	ClientCredentials = "client_credentials" // POST /oauth2/token, grant_type=client_credentials (confidential client)
	Refresh           = "refresh"            // POST /oauth2/token, grant_type=refresh_token, always with the newest refresh token
	Login             = "login"              // the whole authorization-code login with PKCE, password form included, and the code exchange
	SSH               = "ssh"                // POST /ssh with a user's access token and a fresh Ed25519 key
	Introspect        = "introspect"         // POST /oauth2/introspect by the confidential client
	Members           = "members"            // GET /api/orgs/{org}/members?limit=50 with an owner's or admin's access token
)

// MembersPage is how many members the members scenario asks for.
const MembersPage = 50

// Scenarios lists every scenario in the order Run runs them by default.
var Scenarios = []string{ClientCredentials, Refresh, Login, SSH, Introspect, Members}

// Outcome kinds: KindOK, "4xx:<status>", KindUnavailable, "5xx:<status>",
// KindTransport, KindInvalid.
const (
	KindOK          = "2xx"
	KindUnavailable = "503"
	// KindTransport: no HTTP answer (connection refused or reset, timeout).
	KindTransport = "transport"
	// KindInvalid: an answer the scenario cannot use, such as a 2xx without
	// a token, an inactive introspection result, an error redirect, or a
	// login page without its form.
	KindInvalid = "invalid"
)

// Options configure Run. URL is required; so are the credentials the chosen
// scenarios need (ClientID and ClientSecret for client_credentials and
// introspect; Username and Password for refresh, login, ssh and members;
// Org for members).
type Options struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// Scenarios to run, in this order; nil means all of Scenarios.
	Scenarios []string
	// Concurrency is the number of workers per scenario (default 4).
	Concurrency int
	// Duration is how long each scenario runs (default 10s).
	Duration time.Duration

	// ClientID and ClientSecret: a confidential client allowed the
	// client_credentials grant (client_secret_basic).
	ClientID, ClientSecret string
	// PublicClientID is the public client used for logins (default
	// stepup-cli); it must accept the loopback redirect RedirectURI.
	PublicClientID string
	// RedirectURI is the loopback callback of the logins (default
	// http://127.0.0.1:53682/callback). Nothing ever connects to it.
	RedirectURI string
	// Username and Password of a person without MFA.
	Username, Password string
	// LoginUsername, if set, names the person of each login of the login
	// scenario (with Password), for example one drawn at random from many
	// seeded people; it is called from the workers concurrently. The other
	// scenarios, and the login scenario when it is nil, use Username.
	LoginUsername func() string
	// Org is the organization whose first page of members the members
	// scenario lists; Username must be one of its owners or admins.
	Org string

	// HTTPClient's Transport and Timeout are used for every request
	// (default: a transport keeping Concurrency idle connections per host,
	// and a 30s timeout). Cookie jars and the redirect policy are Run's own.
	HTTPClient *http.Client
	// OnResult, if set, is called after every operation from the worker
	// goroutines, concurrently: it must be safe for that and quick.
	OnResult func(Result)
	// SkipBaseline skips measuring the raw cryptographic cost.
	SkipBaseline bool
}

// Result is one operation's outcome, as given to Options.OnResult.
type Result struct {
	Scenario string
	// Kind is KindOK, "4xx:<status>", KindUnavailable, "5xx:<status>",
	// KindTransport or KindInvalid.
	Kind string
	// Status is the HTTP status of the step that failed, or of the last
	// step on success; 0 when no answer came.
	Status int
	// Err is nil on success.
	Err error
	// At is when the operation finished; it took Latency.
	At      time.Time
	Latency time.Duration
}

// OK reports whether the operation succeeded.
func (r Result) OK() bool { return r.Kind == KindOK }

// Report is what Run measured.
type Report struct {
	URL         string
	Concurrency int
	Duration    time.Duration
	// CPUs is runtime.NumCPU() of the machine that ran the load (and
	// measured the baseline).
	CPUs      int
	Scenarios []ScenarioReport
}

// Scenario returns the named scenario's report.
func (r Report) Scenario(name string) (ScenarioReport, bool) {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return ScenarioReport{}, false
}

// ScenarioReport is one scenario's measurements.
type ScenarioReport struct {
	Name string
	// Err is set when the scenario could not start (its setup failed);
	// nothing else is then measured.
	Err error
	// Start is when the clock started; Elapsed runs from then to the end of
	// the last operation.
	Start   time.Time
	Elapsed time.Duration
	// Ops counts the operations that finished, whatever their outcome; OK
	// those that succeeded.
	Ops, OK int
	// Counts is Ops by outcome kind.
	Counts map[string]int
	// Samples holds the first error seen of each failing kind.
	Samples map[string]string
	// Latency percentiles of the successful operations.
	Latency Percentiles
	// FirstFailure and LastFailure are when the first and the last failed
	// operation finished; RecoveredAt is when the first success after
	// LastFailure finished. All are zero when there was no failure, and
	// RecoveredAt is zero when no success followed the last failure.
	FirstFailure, LastFailure, RecoveredAt time.Time
	// Baseline is the raw cryptographic cost of one operation.
	Baseline Baseline
}

// Throughput is successful operations per second.
func (s ScenarioReport) Throughput() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.OK) / s.Elapsed.Seconds()
}

// Failures is Ops - OK.
func (s ScenarioReport) Failures() int { return s.Ops - s.OK }

// Percentiles of a latency distribution.
type Percentiles struct {
	P50, P90, P99, Max time.Duration
}

// Run drives the server at o.URL through each scenario in turn and reports.
// The error joins the scenarios' setup errors; the report holds whatever
// was measured.
func Run(ctx context.Context, o Options) (Report, error) {
	r, err := newRunner(o)
	if err != nil {
		return Report{}, err
	}
	rep := Report{URL: r.base.String(), Concurrency: r.o.Concurrency, Duration: r.o.Duration, CPUs: runtime.NumCPU()}
	var errs []error
	for _, name := range r.o.Scenarios {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		sr := r.run(ctx, name)
		if sr.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, sr.Err))
		}
		rep.Scenarios = append(rep.Scenarios, sr)
	}
	if !r.o.SkipBaseline && ctx.Err() == nil {
		r.baselines(rep.Scenarios)
	}
	return rep, errors.Join(errs...)
}

// needs says which credentials each scenario needs.
var needs = map[string]struct{ client, user, org bool }{
	ClientCredentials: {client: true},
	Introspect:        {client: true},
	Refresh:           {user: true},
	Login:             {user: true},
	SSH:               {user: true},
	Members:           {user: true, org: true},
	Healthz:           {},
}

type runner struct {
	o    Options
	base *url.URL
	// transport and timeout of every HTTP client.
	transport http.RoundTripper
	timeout   time.Duration

	// session is a browser logged in once as the user; workers get their
	// own grants through it without posting the password again.
	sessionMu sync.Mutex
	session   *browser

	algsMu sync.Mutex
	algs   tokenAlgs
}

func newRunner(o Options) (*runner, error) {
	base, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("load: URL %q must be an absolute http(s) URL", o.URL)
	}
	if o.Scenarios == nil {
		o.Scenarios = Scenarios
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.PublicClientID == "" {
		o.PublicClientID = "stepup-cli"
	}
	if o.RedirectURI == "" {
		o.RedirectURI = "http://127.0.0.1:53682/callback"
	}
	var missing []string
	for _, s := range o.Scenarios {
		n, ok := needs[s]
		switch {
		case !ok:
			return nil, fmt.Errorf("load: unknown scenario %q (scenarios: %s)", s, strings.Join(Scenarios, ", "))
		case n.client && (o.ClientID == "" || o.ClientSecret == ""):
			missing = append(missing, s+" needs a confidential client's id and secret")
		case n.user && (o.Username == "" || o.Password == ""):
			missing = append(missing, s+" needs a username and password")
		case n.org && o.Org == "":
			missing = append(missing, s+" needs an organization whose owner or admin the user is")
		}
	}
	if len(missing) > 0 {
		return nil, errors.New("load: " + strings.Join(missing, "; "))
	}
	r := &runner{o: o, base: base, timeout: 30 * time.Second}
	if o.HTTPClient != nil {
		r.transport, r.timeout = o.HTTPClient.Transport, o.HTTPClient.Timeout
	}
	if r.transport == nil {
		r.transport = &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   2 * o.Concurrency, // one per worker, and the login's token exchange
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	return r, nil
}

// worker is one client's state within a scenario.
type worker interface {
	// setup makes the worker ready (a grant, a token); it runs before the
	// clock and again, uncounted, after a failure that lost the state.
	setup(ctx context.Context) error
	// do runs one operation, calling sw.start() just before its first
	// request (client-side preparation is not timed). lost reports that the
	// worker must run setup again before the next operation.
	do(ctx context.Context, sw *stopwatch) (status int, lost bool, err error)
}

// stopwatch times one operation: from start (or the call) to stop (or the
// return), so that client-side work before and after is not counted.
type stopwatch struct{ t, end time.Time }

func (s *stopwatch) start() { s.t = time.Now() }
func (s *stopwatch) stop()  { s.end = time.Now() }

func (r *runner) newWorker(name string) worker {
	switch name {
	case ClientCredentials:
		return &clientCredentialsWorker{r: r}
	case Refresh:
		return &refreshWorker{r: r}
	case Login:
		return &loginWorker{r: r}
	case SSH:
		return &sshWorker{r: r}
	case Introspect:
		return &introspectWorker{r: r}
	case Members:
		return &membersWorker{r: r}
	case Healthz:
		return &healthzWorker{r: r}
	}
	panic("unknown scenario " + name)
}

// tally is one worker's counts, merged at the end.
type tally struct {
	ops, ok   int
	counts    map[string]int
	samples   map[string]string
	latencies []time.Duration
	firstFail time.Time
	lastFail  time.Time
	// okAt: when each success finished, in order.
	okAt []time.Time
}

func (t *tally) add(res Result) {
	t.ops++
	t.counts[res.Kind]++
	if res.OK() {
		t.ok++
		t.latencies = append(t.latencies, res.Latency)
		t.okAt = append(t.okAt, res.At)
		return
	}
	if _, ok := t.samples[res.Kind]; !ok && res.Err != nil {
		t.samples[res.Kind] = res.Err.Error()
	}
	if t.firstFail.IsZero() {
		t.firstFail = res.At
	}
	t.lastFail = res.At
}

// firstOKAfter is when the first success after at finished, or zero.
func (t *tally) firstOKAfter(at time.Time) time.Time {
	i, _ := slices.BinarySearchFunc(t.okAt, at, func(a, b time.Time) int { return a.Compare(b) })
	for ; i < len(t.okAt); i++ {
		if t.okAt[i].After(at) {
			return t.okAt[i]
		}
	}
	return time.Time{}
}

func (r *runner) run(ctx context.Context, name string) ScenarioReport {
	sr := ScenarioReport{Name: name, Counts: map[string]int{}, Samples: map[string]string{}}
	workers := make([]worker, r.o.Concurrency)
	for i := range workers {
		workers[i] = r.newWorker(name)
		if err := workers[i].setup(ctx); err != nil {
			sr.Err = fmt.Errorf("setup: %w", err)
			return sr
		}
	}
	tallies := make([]*tally, len(workers))
	start := time.Now()
	deadline := start.Add(r.o.Duration)
	var wg sync.WaitGroup
	for i, w := range workers {
		t := &tally{counts: map[string]int{}, samples: map[string]string{}}
		tallies[i] = t
		wg.Go(func() { r.drive(ctx, name, w, deadline, t) })
	}
	wg.Wait()
	end := start
	var all []time.Duration
	for _, t := range tallies {
		sr.Ops += t.ops
		sr.OK += t.ok
		for k, n := range t.counts {
			sr.Counts[k] += n
		}
		for k, s := range t.samples {
			if _, ok := sr.Samples[k]; !ok {
				sr.Samples[k] = s
			}
		}
		all = append(all, t.latencies...)
		if !t.firstFail.IsZero() && (sr.FirstFailure.IsZero() || t.firstFail.Before(sr.FirstFailure)) {
			sr.FirstFailure = t.firstFail
		}
		if t.lastFail.After(sr.LastFailure) {
			sr.LastFailure = t.lastFail
		}
		if t.lastFail.After(end) {
			end = t.lastFail
		}
		if n := len(t.okAt); n > 0 && t.okAt[n-1].After(end) {
			end = t.okAt[n-1]
		}
	}
	// Recovery: the first success, in any worker, after the last failure.
	if !sr.LastFailure.IsZero() {
		for _, t := range tallies {
			at := t.firstOKAfter(sr.LastFailure)
			if !at.IsZero() && (sr.RecoveredAt.IsZero() || at.Before(sr.RecoveredAt)) {
				sr.RecoveredAt = at
			}
		}
	}
	sr.Start, sr.Elapsed = start, end.Sub(start)
	sr.Latency = percentiles(all)
	return sr
}

// drive runs one worker until the deadline.
func (r *runner) drive(ctx context.Context, name string, w worker, deadline time.Time, t *tally) {
	lost := false
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if lost {
			// The worker's grant or token is gone (revoked, or the store
			// lost it): get another, uncounted, and pause if that fails.
			if err := w.setup(ctx); err != nil {
				pause(ctx, 100*time.Millisecond)
				continue
			}
			lost = false
		}
		var sw stopwatch
		called := time.Now()
		status, l, err := w.do(ctx, &sw)
		at := time.Now()
		if ctx.Err() != nil {
			return // aborted: not an outcome of the server's
		}
		lost = l
		if sw.t.IsZero() {
			sw.t = called
		}
		if !sw.end.IsZero() {
			at = sw.end
		}
		res := Result{Scenario: name, Kind: classify(status, err), Status: status, Err: err, At: at, Latency: at.Sub(sw.t)}
		t.add(res)
		if r.o.OnResult != nil {
			r.o.OnResult(res)
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// invalidAnswer is an answer a scenario cannot use.
type invalidAnswer struct{ msg string }

func (e *invalidAnswer) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &invalidAnswer{fmt.Sprintf(format, args...)}
}

func classify(status int, err error) string {
	var inv *invalidAnswer
	switch {
	case err == nil:
		return KindOK
	case errors.As(err, &inv):
		return KindInvalid
	case status == http.StatusServiceUnavailable:
		return KindUnavailable
	case status >= 400 && status < 500:
		return fmt.Sprintf("4xx:%d", status)
	case status >= 500:
		return fmt.Sprintf("5xx:%d", status)
	case status == 0:
		return KindTransport
	}
	return KindInvalid
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.5) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}

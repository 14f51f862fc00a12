package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	loadcompare "github.com/stepup-dev/stepup/internal/load/compare"
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

// compare runs stepupd and bare fosite side by side (see compareUsage),
// each from this very binary. The harness's package is imported as
// loadcompare, since this command already owns the name.
func compare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseCompareFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.Executable, err = os.Executable(); err != nil {
		return fmt.Errorf("compare: cannot find this binary to start its sides: %w", err)
	}
	o.ServeArgs = func(config string) []string { return []string{"serve", "--config", config} }
	o.BaselineArgs = func(addr, id, secret string) []string {
		return []string{"baseline", "--addr", addr, "--client-id", id, "--client-secret", secret}
	}
	o.Log = stderr
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return loadcompare.Run(ctx, o, stdout)
}

func parseCompareFlags(args []string, stderr io.Writer) (loadcompare.Options, error) {
	fs := flag.NewFlagSet("stepupd compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), compareUsage)
		fs.PrintDefaults()
	}
	o := loadcompare.Options{}
	var scenarios, wrk string
	fs.IntVar(&o.Runs, "runs", 3, "runs, each with a fresh process of each side")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "concurrent clients (connections)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long each scenario runs on each side (wrk: whole seconds, rounded up)")
	fs.StringVar(&scenarios, "scenarios", "client_credentials,introspect,healthz", "comma-separated `list`: client_credentials, introspect, healthz (healthz is always run)")
	fs.StringVar(&wrk, "wrk", "auto", "auto: drive the load with wrk when it is on PATH; never: with stepupd's own load generator")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("compare: unexpected argument %q", fs.Arg(0))
	case o.Runs < 1 || o.Concurrency < 1 || o.Duration <= 0:
		return o, errors.New("compare: --runs and --concurrency must be at least 1 and --duration positive")
	case wrk != "auto" && wrk != "never":
		return o, fmt.Errorf("compare: --wrk %q: give auto or never", wrk)
	}
	o.NoWrk = wrk == "never"
	var err error
	o.Scenarios, err = loadcompare.ParseScenarios(scenarios)
	return o, err
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
	id := fs.String("client-id", loadcompare.ClientID, "the confidential client's id")
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
	hs, err := loadcompare.NewBaselineServer(base, *id, *secret)
	if err != nil {
		ln.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "bare fosite %s listening on %s\n  client: %s   secret: %s\n", loadcompare.FositeVersion(), base, *id, shown)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(shutdownCtx)
}

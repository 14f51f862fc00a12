package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

const benchUsage = `Usage: stepupd bench [flags]

Drives a running Stepup server over HTTP with --concurrency clients, one
scenario after another for --duration each, and prints per scenario the
successful operations per second, latency percentiles (p50, p90, p99, max)
and every outcome counted by kind (2xx, 4xx by status, 503, other 5xx,
transport errors, invalid answers), beside the raw cryptographic cost of
one operation measured in this process.

Scenarios:
  client_credentials  POST /oauth2/token by the confidential client
  refresh             refresh-token rotation: each client logs in once
                      (openid offline_access), then refreshes with the newest
                      refresh token
  login               the whole login with PKCE, as a browser and a native
                      app do it: GET /oauth2/authorize, the login page, POST
                      /login with its CSRF token and cookie, the redirect to
                      the 127.0.0.1 callback (read, never connected to), the
                      code exchange; a new browser each time
  ssh                 POST /ssh with a user's access token and a fresh
                      Ed25519 key
  introspect          POST /oauth2/introspect by the confidential client

The login scenario sends many correct passwords for one account at once:
the server counts sign-in attempts in flight against the account, so more
than a few concurrent clients see 429 answers (counted as 4xx:429).

Against stepupd --dev, give the secret and password it prints:
  stepupd bench --url http://127.0.0.1:8080 --client-secret SECRET --password PASSWORD

Without --scenarios, scenarios whose credentials are missing are skipped.
The client secret and password can also come from STEPUP_BENCH_CLIENT_SECRET
and STEPUP_BENCH_PASSWORD.

Flags:
`

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stepupd bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	var o load.Options
	var scenarios string
	fs.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "base `URL` of the running server")
	fs.StringVar(&scenarios, "scenarios", "", "comma-separated `list` of scenarios (default all: "+strings.Join(load.Scenarios, ",")+")")
	fs.IntVar(&o.Concurrency, "concurrency", 4, "concurrent clients per scenario")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long each scenario runs")
	fs.StringVar(&o.ClientID, "client-id", demoService, "confidential client, for client_credentials and introspect")
	fs.StringVar(&o.ClientSecret, "client-secret", os.Getenv("STEPUP_BENCH_CLIENT_SECRET"), "its secret")
	fs.StringVar(&o.PublicClientID, "public-client-id", demoClient, "public client with a loopback redirect, for logins")
	fs.StringVar(&o.Username, "username", "alice", "user without MFA, for refresh, login and ssh")
	fs.StringVar(&o.Password, "password", os.Getenv("STEPUP_BENCH_PASSWORD"), "the user's password")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if o.Concurrency < 1 || o.Duration <= 0 {
		return errors.New("bench: --concurrency must be at least 1 and --duration positive")
	}
	if scenarios != "" {
		for _, s := range strings.Split(scenarios, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.Scenarios = append(o.Scenarios, s)
			}
		}
	} else {
		var skipped []string
		for _, s := range load.Scenarios {
			client := s == load.ClientCredentials || s == load.Introspect
			if client && o.ClientSecret == "" || !client && o.Password == "" {
				skipped = append(skipped, s)
				continue
			}
			o.Scenarios = append(o.Scenarios, s)
		}
		if len(skipped) > 0 {
			fmt.Fprintf(stderr, "stepupd bench: skipping %s: give --client-secret for client_credentials and introspect, --password for refresh, login and ssh\n",
				strings.Join(skipped, ", "))
		}
		if len(o.Scenarios) == 0 {
			return errors.New("bench: nothing to run; see stepupd bench -h")
		}
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(load.Scenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (scenarios: %s)", s, strings.Join(load.Scenarios, ", "))
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "stepupd bench: %s against %s, %d clients, %s per scenario\n",
		strings.Join(o.Scenarios, ", "), o.URL, o.Concurrency, o.Duration)
	rep, err := load.Run(ctx, o)
	if len(rep.Scenarios) > 0 {
		if werr := rep.WriteText(stdout); werr != nil {
			return werr
		}
	}
	return err
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/directory"
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
  members             GET /api/orgs/ORG/members?limit=50 (--org) with the
                      access token of --username, an owner or admin of it

The login scenario sends many correct passwords for one account at once:
the server counts sign-in attempts in flight against the account, so more
than a few concurrent clients see 429 answers (counted as 4xx:429), unless
--login-users spreads the logins over many people.

Against stepupd --dev, give the secret and password it prints:
  stepupd bench --url http://127.0.0.1:8080 --client-secret SECRET --password PASSWORD --org demo

Without --scenarios, scenarios whose credentials are missing are skipped
(members without --org). The client secret and password can also come from
STEPUP_BENCH_CLIENT_SECRET and STEPUP_BENCH_PASSWORD.

At scale: --seed-users N writes N people straight into the Redis directory
of the server's store (--store, the store: URL of its config), with the
directory's own calls, so that the records and indexes are those the server
writes; --seed-org ORG adds an organization of --seed-org-size of them. The
people are bench0000000, bench0000001, … (email bench0000000@bench.example.com),
all with the password --password (hashed once: one argon2id hash for all);
bench0000000 owns the organization. People and members already there are
left alone, so an interrupted seeding can be run again. Without --scenarios
it only seeds; with them it seeds, then runs them against --url, a stepupd
whose config names the same store. --login-users N (default: --seed-users)
makes each login one of the first N seeded people, drawn at random; with it
or with --seed-org, --username defaults to bench0000000 and --org to
--seed-org. A million people took 38 s and 720 MiB of Redis on 2 vCPUs:
  stepupd bench --store redis://127.0.0.1:6379/0 --seed-users 1000000 \
      --seed-org bench --password PASSWORD
  stepupd serve --config stepup.yaml &          # store: redis://127.0.0.1:6379/0
  stepupd bench --url http://127.0.0.1:8080 --password PASSWORD \
      --login-users 1000000 --org bench --scenarios login,members

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
	var seed load.SeedOptions
	var store string
	var loginUsers int
	fs.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "base `URL` of the running server")
	fs.StringVar(&scenarios, "scenarios", "", "comma-separated `list` of scenarios (default all: "+strings.Join(load.Scenarios, ",")+")")
	fs.IntVar(&o.Concurrency, "concurrency", 4, "concurrent clients per scenario")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long each scenario runs")
	fs.StringVar(&o.ClientID, "client-id", demoService, "confidential client, for client_credentials and introspect")
	fs.StringVar(&o.ClientSecret, "client-secret", os.Getenv("STEPUP_BENCH_CLIENT_SECRET"), "its secret")
	fs.StringVar(&o.PublicClientID, "public-client-id", demoClient, "public client with a loopback redirect, for logins")
	fs.StringVar(&o.Username, "username", "alice", "user without MFA, for refresh, login, ssh and members (with --seed-org or --login-users: "+load.SeedUsername(0)+")")
	fs.StringVar(&o.Password, "password", os.Getenv("STEPUP_BENCH_PASSWORD"), "the user's password (and the seeded people's)")
	fs.StringVar(&o.Org, "org", "", "organization `id` for members, which --username owns or administers (default: --seed-org)")
	fs.IntVar(&loginUsers, "login-users", 0, "each login is one of the first `N` seeded people, at random (default: --seed-users)")
	fs.StringVar(&store, "store", "", "the server's Redis store (`URL`, as store: in its config), for --seed-users")
	fs.IntVar(&seed.Users, "seed-users", 0, "write `N` people into the store's directory first")
	fs.StringVar(&seed.Org, "seed-org", "", "and an organization with this `id` of --seed-org-size of them")
	fs.IntVar(&seed.OrgSize, "seed-org-size", 10_000, "members of --seed-org (at most --seed-users)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if o.Concurrency < 1 || o.Duration <= 0 {
		return errors.New("bench: --concurrency must be at least 1 and --duration positive")
	}
	seeding := seed.Users > 0
	switch {
	case seed.Users < 0 || loginUsers < 0 || seed.OrgSize < 1:
		return errors.New("bench: --seed-users, --seed-org-size and --login-users must be positive")
	case !seeding && (store != "" || seed.Org != "" || set["seed-org-size"]):
		return errors.New("bench: --store, --seed-org and --seed-org-size go with --seed-users N")
	case seeding && store == "":
		return errors.New("bench: --seed-users needs --store, the redis:// URL of the server's store")
	case seeding && storeKind(store) != "redis":
		return fmt.Errorf("bench: --store %q: seeding needs the server's Redis (redis://…); a memory store lives only inside its server", store)
	case seeding && o.Password == "":
		return errors.New("bench: --seed-users needs --password, the seeded people's password")
	case seeding && loginUsers > seed.Users:
		return fmt.Errorf("bench: --login-users %d is more than the %d people seeded", loginUsers, seed.Users)
	}
	if seeding && loginUsers == 0 {
		loginUsers = seed.Users
	}
	if !set["org"] {
		o.Org = seed.Org
	}
	if !set["username"] && (seed.Org != "" || loginUsers > 0) {
		o.Username = load.SeedUsername(0)
	}
	if loginUsers > 0 {
		n := loginUsers
		o.LoginUsername = func() string { return load.SeedUsername(rand.IntN(n)) }
	}

	if scenarios != "" {
		for _, s := range strings.Split(scenarios, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.Scenarios = append(o.Scenarios, s)
			}
		}
	} else if !seeding {
		var skipped []string
		for _, s := range load.Scenarios {
			client := s == load.ClientCredentials || s == load.Introspect
			if client && o.ClientSecret == "" || !client && o.Password == "" || s == load.Members && o.Org == "" {
				skipped = append(skipped, s)
				continue
			}
			o.Scenarios = append(o.Scenarios, s)
		}
		if len(skipped) > 0 {
			fmt.Fprintf(stderr, "stepupd bench: skipping %s: give --client-secret for client_credentials and introspect, --password for refresh, login, ssh and members, --org for members\n",
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
	if seeding {
		if err := seedDirectory(ctx, store, o.Password, seed, stdout, stderr); err != nil {
			return err
		}
		if len(o.Scenarios) == 0 {
			return nil
		}
	}
	who := o.Username
	if o.LoginUsername != nil {
		who += fmt.Sprintf("; logins as %s … %s at random", load.SeedUsername(0), load.SeedUsername(loginUsers-1))
	}
	fmt.Fprintf(stderr, "stepupd bench: %s against %s, %d clients, %s per scenario (user %s)\n",
		strings.Join(o.Scenarios, ", "), o.URL, o.Concurrency, o.Duration, who)
	rep, err := load.Run(ctx, o)
	if len(rep.Scenarios) > 0 {
		if werr := rep.WriteText(stdout); werr != nil {
			return werr
		}
	}
	return err
}

// seedDirectory writes the people and the organization of seed into the
// directory of the Redis store at url, all with one hash of password.
func seedDirectory(ctx context.Context, url, password string, seed load.SeedOptions, stdout, stderr io.Writer) error {
	st, err := openStore(url)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("bench: the store at %s: %w", url, err)
	}
	if seed.PasswordHash, err = authz.HashPassword(password); err != nil {
		return err
	}
	seed.Progress = func(done int) {
		fmt.Fprintf(stderr, "stepupd bench: seeded %d of %d people\n", done, seed.Users)
	}
	fmt.Fprintf(stderr, "stepupd bench: seeding %d people into %s\n", seed.Users, url)
	rep, err := load.Seed(ctx, directory.New(st, nil), seed)
	if err != nil {
		return fmt.Errorf("bench: seeding: %w", err)
	}
	fmt.Fprintf(stdout, "Seeded %d people (%d new) in %s, %.0f a second: %s … %s, with the password given.\n",
		rep.Users, rep.NewUsers, rep.UsersTook.Round(time.Millisecond), float64(rep.Users)/rep.UsersTook.Seconds(),
		load.SeedUsername(0), load.SeedUsername(rep.Users-1))
	if rep.Org != "" {
		fmt.Fprintf(stdout, "Organization %s: %d members (%d new) in %s; %s owns it.\n",
			rep.Org, rep.Members, rep.NewMembers, rep.OrgTook.Round(time.Millisecond), rep.Owner)
	}
	return nil
}

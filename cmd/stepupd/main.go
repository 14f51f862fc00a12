// Command stepupd is the Stepup authorization server.
//
//	stepupd [serve] [--dev] [--config FILE] [--addr HOST:PORT] [--issuer URL]
//	stepupd hash-password          (reads a password on stdin, prints its argon2id hash)
//	stepupd rotate-keys --config FILE
//	stepupd bench --url URL [--scenarios LIST] [--concurrency N] [--duration D] …   (load test; -h for more)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/config"
	"github.com/stepup-dev/stepup/mfa"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return // a subcommand's --help, printed: not a failure
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stepupd:", err)
		os.Exit(1)
	}
}

// usage is what --help, -h and help print.
const usage = `stepupd is the Stepup identity provider.

Usage:
  stepupd [serve] [--dev | --config FILE] [--addr ADDR] [--issuer URL]
  stepupd hash-password             < password on standard input
  stepupd rotate-keys --config FILE
  stepupd bench --help
  stepupd compare [--runs N] [--concurrency N] [--duration D] [--scenarios LIST] [--wrk auto|never]
  stepupd baseline [--addr ADDR] [--client-id ID] [--client-secret SECRET]

Commands:
  serve          run the server (the default): --dev tries it out with an
                 in-memory store and a seeded demo; --config runs a deployment
  hash-password  print the argon2id hash of a password, for users[].password_hash
  rotate-keys    bring in new signing keys now, on the configured store
  bench          drive a running server and measure it
  compare        run stepupd and bare fosite side by side, fresh processes per
                 run, under the same load, and print the ratios (--help for more)
  baseline       serve bare fosite, compare's other side

"stepupd serve --help" lists the server's flags.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd, named := "serve", false
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args, named = args[0], args[1:], true
	}
	if cmd == "help" || (!named && len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help")) {
		_, err := io.WriteString(stdout, usage)
		return err
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr)
	case "hash-password":
		return hashPassword(stdin, stdout)
	case "rotate-keys":
		return rotateKeys(ctx, args, stdout, stderr)
	case "bench":
		return bench(ctx, args, stdout, stderr)
	case "compare":
		return compare(ctx, args, stdout, stderr)
	case "baseline":
		return baseline(ctx, args, stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q; \"stepupd help\" lists the commands", cmd)
	}
}

type options struct {
	dev          bool
	configPath   string
	addr, issuer string
}

func parseFlags(name string, args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("stepupd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.dev, "dev", false, "development mode: in-memory store, generated keys, seeded demo users, organizations, clients and a gateway-protected service")
	fs.StringVar(&o.configPath, "config", "", "YAML config `file`; every key can also be set with STEPUP_* environment variables")
	fs.StringVar(&o.addr, "addr", "", "listen address (default 127.0.0.1:8080)")
	fs.StringVar(&o.issuer, "issuer", "", "public base URL of the server (default http://<addr>)")
	return o, fs.Parse(args)
}

// loadConfig reads the file and environment, applies flags, and in dev mode
// seeds the demo (see seedDemo).
func loadConfig(o options, stdout io.Writer) (*config.Config, *demo, error) {
	if !o.dev && o.configPath == "" {
		if _, ok := os.LookupEnv("STEPUP_ISSUER"); !ok {
			return nil, nil, errors.New("give --config FILE (or STEPUP_* variables) for a real deployment, or --dev to try Stepup out")
		}
	}
	var cfg *config.Config
	var d *demo
	var err error
	if o.configPath != "" {
		if cfg, err = config.Load(o.configPath, os.LookupEnv); err != nil {
			return nil, nil, err
		}
	} else {
		cfg = &config.Config{}
		if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
			return nil, nil, err
		}
	}
	if o.addr != "" {
		cfg.Addr = o.addr
	}
	if o.issuer != "" {
		cfg.Issuer = o.issuer
	}
	if o.addr != "" && o.issuer == "" && o.configPath == "" {
		cfg.Issuer = "" // let the default follow the new address
	}
	if o.dev {
		if cfg.Store == "" {
			cfg.Store = "memory"
		}
		if d, err = seedDemo(cfg); err != nil {
			return nil, nil, err
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	return cfg, d, nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags("serve", args, stderr)
	if err != nil {
		return err
	}
	cfg, d, err := loadConfig(o, stdout)
	if err != nil {
		return err
	}
	logs := newLogBuffer(stderr)
	defer logs.close()
	log := newLogger(logs, o.dev)
	redis.SetLogger(redisLogger{log})
	st, err := openStore(cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	acfg, err := serverConfig(cfg, st, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	acfg.Metrics = reg
	if d != nil {
		// stepupd bench's ssh scenario asks for thousands of certificates
		// for one person: the demo lets it, rather than refuse past 500.
		acfg.MaxLiveCertificates = 50000
	}
	srv, err := authz.New(acfg)
	if err != nil {
		return err
	}
	// Hashing the seeded passwords (argon2id, 19 MiB each) left garbage
	// the runtime would hand back to the system only minutes from now.
	debug.FreeOSMemory()
	if os.Getenv("GOGC") == "" {
		// What the server keeps live is small (clients, keys, caches; the
		// grants are in Redis), and every request leaves 20 KB or more of
		// garbage, mostly signing's: with the runtime's default the
		// collector runs several times a second under load and takes a
		// tenth of the CPU. Twice the headroom halves that work, for a
		// heap of three times the live one instead of two (stepupd
		// compare: 5% more tokens a second). GOGC in the environment
		// still decides.
		debug.SetGCPercent(gcPercent)
	}
	ropts := routerOptions{metrics: reg, metricsToken: cfg.Metrics.Token}
	for _, p := range cfg.TrustedProxies {
		pfx, _ := config.ParseProxy(p) // validated with the config
		ropts.trustedProxies = append(ropts.trustedProxies, pfx)
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Addr, err)
	}
	hs := &http.Server{
		Handler:           router(srv, log, ropts),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	log.Info("stepupd listening", "addr", ln.Addr().String(), "issuer", cfg.Issuer, "store", storeKind(cfg.Store))
	if d != nil {
		d.print(stdout, cfg)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Stop taking requests, let those in flight finish.
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return hs.Shutdown(shutdownCtx)
}

// gcPercent is stepupd's GOGC unless the environment sets one.
const gcPercent = 200

// redisLogger sends go-redis's own messages (failed dials) to our log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

func newLogger(b *logBuffer, dev bool) *slog.Logger {
	if dev {
		return slog.New(flushingHandler{slog.NewTextHandler(b, nil), b})
	}
	return slog.New(flushingHandler{slog.NewJSONHandler(b, nil), b})
}

// serverConfig turns the file's config into the server's, hashing
// passwords given in clear.
func serverConfig(cfg *config.Config, st storeCloser, log *slog.Logger) (authz.Config, error) {
	c := authz.Config{
		Issuer:                cfg.Issuer,
		Store:                 st,
		Secret:                cfg.Secret,
		AccessTokenTTL:        time.Duration(cfg.Tokens.AccessTokenTTL),
		IDTokenTTL:            time.Duration(cfg.Tokens.IDTokenTTL),
		RefreshTokenTTL:       time.Duration(cfg.Tokens.RefreshTokenTTL),
		AuthCodeTTL:           time.Duration(cfg.Tokens.AuthCodeTTL),
		SessionTTL:            time.Duration(cfg.Tokens.SessionTTL),
		SigningAlg:            cfg.Tokens.SigningAlg,
		KeyRotation:           time.Duration(cfg.Tokens.KeyRotation),
		MaxFailuresPerAccount: cfg.Login.MaxFailuresPerAccount,
		MaxFailuresPerAddress: cfg.Login.MaxFailuresPerAddress,
		FailureWindow:         time.Duration(cfg.Login.FailureWindow),
		ReminderInterval:      time.Duration(cfg.Reminders.Interval),
		MailFrom:              cfg.SMTP.From,
		APIAudience:           cfg.API.Audience,
		APIClients:            cfg.API.Clients,
		ManageClients:         cfg.API.ManageClients,
		ManageScope:           cfg.API.ManageScope,
		APITokenTTL:           time.Duration(cfg.API.TokenTTL),
		Admins:                cfg.Admins,
		Logger:                log,
	}
	if cfg.SMTP.Addr != "" {
		smtp := mfa.SMTP{Addr: cfg.SMTP.Addr, Username: cfg.SMTP.Username, Password: cfg.SMTP.Password}
		if cfg.SMTP.CAFile != "" {
			// Read at start, so that a bad path fails now rather than at the
			// first reminder.
			roots, err := mfa.LoadCABundle(cfg.SMTP.CAFile)
			if err != nil {
				return c, fmt.Errorf("smtp.ca_file: %w", err)
			}
			smtp.RootCAs = roots
		}
		c.Mailer = smtp
	}
	if c.Secret == "" {
		if storeKind(cfg.Store) != "memory" {
			return c, errors.New("secret: required with a shared store, so that every replica can read the keys")
		}
		c.Secret = randomSecret()
	}
	for _, cl := range cfg.Clients {
		hash := cl.SecretHash
		if cl.Secret != "" {
			hash = authz.HashClientSecret(cl.Secret)
		}
		c.Clients = append(c.Clients, authz.Client{
			ID: cl.ID, SecretHash: hash, Public: cl.Public,
			RedirectURIs: cl.RedirectURIs, PostLogoutRedirectURIs: cl.PostLogoutRedirectURIs,
			GrantTypes: cl.GrantTypes, ResponseTypes: cl.ResponseTypes, Scopes: cl.Scopes, Audience: cl.Audience,
			TokenEndpointAuthMethod: cl.TokenEndpointAuthMethod, IDTokenAlg: cl.IDTokenSignedResponseAlg, Name: cl.Name,
		})
	}
	for _, u := range cfg.Users {
		hash := u.PasswordHash
		if u.Password != "" {
			var err error
			if hash, err = authz.HashPassword(u.Password); err != nil {
				return c, err
			}
		}
		c.Users = append(c.Users, authz.User{
			ID: u.ID, Username: u.Username, Email: u.Email, Name: u.Name, PasswordHash: hash,
			EmailVerified: true, // the operator vouches for the users it seeds
		})
	}
	for _, p := range cfg.SSOProviders {
		c.SSOProviders = append(c.SSOProviders, authz.SSOProvider{
			ID: p.ID, Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: p.Scopes,
			Name: p.Name, TrustUpstreamMFA: p.TrustUpstreamMFA, Subjects: p.Subjects, MaxSessionAge: time.Duration(p.MaxSessionAge),
			AllowedDomains: p.AllowedDomains, JoinOrg: p.JoinOrg, JoinRole: p.JoinRole,
		})
	}
	for _, o := range cfg.Orgs {
		org := authz.Org{ID: o.ID, Name: o.Name, MFARequired: o.MFARequired, PhishingResistant: o.PhishingResistant, SSOProvider: o.SSOProvider}
		for _, m := range o.Members {
			org.Members = append(org.Members, authz.Member{UserID: m.User, Role: m.Role})
		}
		c.Orgs = append(c.Orgs, org)
	}
	for _, sv := range cfg.Services {
		c.Services = append(c.Services, authz.Service{ID: sv.ID, Org: sv.Org, SSHAddress: sv.SSHAddress})
	}
	return c, nil
}

func hashPassword(stdin io.Reader, stdout io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(stdin, 4096))
	if err != nil {
		return err
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return errors.New("give the password on standard input")
	}
	h, err := authz.HashPassword(pw)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, h)
	return err
}

func rotateKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags("rotate-keys", args, stderr)
	if err != nil {
		return err
	}
	if o.configPath == "" {
		return errors.New("rotate-keys needs --config: the keys of a memory store live only inside the running server")
	}
	cfg, _, err := loadConfig(o, stdout)
	if err != nil {
		return err
	}
	st, err := openStore(cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	acfg, err := serverConfig(cfg, st, slog.New(slog.NewJSONHandler(stderr, nil)))
	if err != nil {
		return err
	}
	srv, err := authz.New(acfg)
	if err != nil {
		return err
	}
	if err := srv.RotateKeys(ctx); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, "signing keys rotated; the old keys stay published until the tokens they signed expire")
	return err
}

// Command stepup-gateway is Stepup's reference SSH gateway: people log in
// with the SSH certificate the Stepup server issued them, as
// `ssh SERVICE@gateway`, and the gateway applies the policy of the
// organization that owns SERVICE.
//
//	stepup-gateway --issuer URL --config FILE [--ssh-addr HOST:PORT]
//	               [--http-addr HOST:PORT] [--host-key FILE] [--state-dir DIR]
//	               [--git-root DIR] [--handshake-timeout D]
//	               [--max-preauth N] [--max-preauth-per-source N]
//	               [--revocation-refresh D] [--revocation-max-age D]
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/gateway"
	"github.com/stepup-dev/stepup/internal/gateway/revoked"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "principals" {
		os.Exit(principalsMain(os.Args[2:]))
	}
	err := run(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "stepup-gateway:", err)
		os.Exit(1)
	}
}

type options struct {
	issuer, configPath string
	sshAddr, httpAddr  string
	hostKey, gitRoot   string
	stateDir           string
	handshakeTimeout   time.Duration
	maxPreAuth         int // in all
	maxPreAuthPerSrc   int
	revocationRefresh  time.Duration
	revocationMaxAge   time.Duration
}

// errUsage is a flag problem the flag package has already explained.
var errUsage = errors.New("usage")

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("stepup-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.issuer, "issuer", "", "the Stepup server's base `URL` (default: issuer from the config file)")
	fs.StringVar(&o.configPath, "config", "", "Stepup config `file`, for its services and gateway keys; STEPUP_* variables apply too")
	fs.StringVar(&o.sshAddr, "ssh-addr", "127.0.0.1:2222", "SSH listen `address`")
	fs.StringVar(&o.httpAddr, "http-addr", "", "HTTP listen `address` for /healthz and the API, GET /projects/{service} (default: none)")
	fs.StringVar(&o.hostKey, "host-key", "", "OpenSSH private host key `file` (default: ssh_host_ed25519_key in --state-dir, created on first start)")
	fs.StringVar(&o.stateDir, "state-dir", "", "`directory` kept across restarts, for the host key (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/stepup-gateway, else ~/.local/state/stepup-gateway)")
	fs.StringVar(&o.gitRoot, "git-root", filepath.Join(os.TempDir(), "stepup-gateway-git"), "`directory` of the services' git repositories")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", gateway.DefaultHandshakeTimeout, "how long a connection may take to authenticate before it is closed")
	fs.IntVar(&o.maxPreAuth, "max-preauth", gateway.DefaultMaxPreAuth,
		fmt.Sprintf("unauthenticated connections open at once from all addresses together (at most %d), so that the rest of the %[1]d connection slots stay for authenticated ones; at the limit, each new one closes the longest-waiting one of the address with the most", gateway.DefaultMaxConns))
	fs.IntVar(&o.maxPreAuthPerSrc, "max-preauth-per-source", gateway.DefaultMaxPreAuthPerSource,
		"unauthenticated connections one address (an IPv6 /64) may have open; more are closed at once. Behind a proxy that hides clients' addresses, raise it to --max-preauth to turn it off")
	fs.DurationVar(&o.revocationRefresh, "revocation-refresh", revoked.DefaultRefreshEvery,
		"how often to fetch the server's list of revoked SSH certificates (GET /ssh/revoked); a revoked certificate is refused within this")
	fs.DurationVar(&o.revocationMaxAge, "revocation-max-age", revoked.DefaultMaxAge,
		"how old the revocation list may grow while it cannot be fetched; beyond, no certificate is admitted until it is fetched again (at least twice --revocation-refresh)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "stepup-gateway takes no arguments, got %q\n", fs.Args())
		fs.Usage()
		return o, errUsage
	}
	if o.handshakeTimeout <= 0 || o.maxPreAuth <= 0 || o.maxPreAuthPerSrc <= 0 {
		fmt.Fprintln(stderr, "stepup-gateway: --handshake-timeout, --max-preauth and --max-preauth-per-source must be positive")
		return o, errUsage
	}
	if o.revocationRefresh <= 0 || o.revocationMaxAge < 2*o.revocationRefresh {
		fmt.Fprintln(stderr, "stepup-gateway: --revocation-refresh must be positive and --revocation-max-age at least twice it")
		return o, errUsage
	}
	if o.maxPreAuth > gateway.DefaultMaxConns {
		fmt.Fprintf(stderr, "stepup-gateway: --max-preauth may be at most %d, the gateway's connection slots\n", gateway.DefaultMaxConns)
		return o, errUsage
	}
	return o, nil
}

func run(args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	slog.SetDefault(log)

	file, err := readConfig(o.configPath, os.LookupEnv)
	if err != nil {
		return err
	}
	issuer := cmp.Or(o.issuer, file.issuer)
	if issuer == "" {
		return errors.New("give --issuer URL (or issuer in the config file): the Stepup server to trust")
	}
	hostKey, err := loadHostKey(o, os.Getenv, log)
	if err != nil {
		return err
	}
	srv, err := gateway.New(gateway.Config{
		Issuer:   issuer,
		Services: file.services, ClientID: file.clientID, ClientSecret: file.clientSecret, TokenClients: file.tokenClients,
		HostKey: hostKey, GitRoot: o.gitRoot, Logger: log,
		HandshakeTimeout: o.handshakeTimeout, MaxPreAuth: o.maxPreAuth, MaxPreAuthPerSource: o.maxPreAuthPerSrc,
		RevocationRefresh: o.revocationRefresh, RevocationMaxAge: o.revocationMaxAge,
	})
	if err != nil {
		return err
	}

	sshLn, err := net.Listen("tcp", o.sshAddr)
	if err != nil {
		return err
	}
	tasks := []func(context.Context) error{func(ctx context.Context) error { return srv.Serve(ctx, sshLn) }}
	if o.httpAddr != "" {
		api, err := srv.HTTPHandler()
		if err != nil {
			_ = sshLn.Close()
			return err
		}
		serveHTTP, err := listenHTTP(o.httpAddr, api)
		if err != nil {
			_ = sshLn.Close()
			return err
		}
		tasks = append(tasks, serveHTTP)
		log.Info("HTTP API listening", "addr", o.httpAddr)
	}
	log.Info("SSH gateway listening", "addr", sshLn.Addr().String(), "issuer", issuer,
		"services", len(file.services), "git_root", o.gitRoot,
		"host_key", ssh.FingerprintSHA256(hostKey.PublicKey()))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = runGroup(ctx, tasks...)
	log.Info("stopped")
	return err
}

// loadHostKey reads --host-key, or else the key kept in the state
// directory, made on the first start.
func loadHostKey(o options, getenv func(string) string, log *slog.Logger) (ssh.Signer, error) {
	if o.hostKey != "" {
		return readHostKey(o.hostKey)
	}
	dir := o.stateDir
	if dir == "" {
		var err error
		if dir, err = defaultStateDir(getenv); err != nil {
			return nil, err
		}
	}
	key, path, created, err := ensureHostKey(dir)
	if created {
		log.Info("generated the gateway's SSH host key; people's ssh will pin it, so keep this file", "path", path,
			"fingerprint", ssh.FingerprintSHA256(key.PublicKey()))
	}
	return key, err
}

// runGroup runs tasks until ctx is done or one of them returns, then stops
// the others and waits for all. It returns the first error.
func runGroup(ctx context.Context, tasks ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { errs <- task(ctx) }()
	}
	var first error
	for range tasks {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
		cancel()
	}
	return first
}

package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/stepup-dev/stepup/tokens"
)

// deniedMessage starts the gateway's refusal on standard error.
const deniedMessage = "Error: Access denied"

// DefaultGatewayPort is where stepup-gateway listens unless told
// otherwise (its --ssh-addr).
const DefaultGatewayPort = 2222

func (a *App) sshCmd(g *globals) *cobra.Command {
	var host string
	var port int
	cmd := &cobra.Command{
		Use:   "ssh SERVICE [COMMAND...]",
		Short: "Connect to a service through the SSH gateway with the Stepup certificate",
		Example: `  stepup ssh abcdefg123456-main-bvxea6i--app
  stepup ssh abcdefg123456-main-bvxea6i--app whoami
  stepup ssh my-service --host ssh.example.com --port 2200 -- ls -la
  stepup ssh abcdefg123456-main-bvxea6i--app --no-browser   # a step-up prints the login URL`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			srv, err := a.discover(cmd.Context(), g)
			if err != nil {
				return err
			}
			if port < 0 || port > 65535 {
				return usageError(cmd, fmt.Sprintf("--port takes a port number from 1 to 65535, not %d", port))
			}
			if host == "" {
				host = srv.cfg.SSHHost
			}
			if port == 0 {
				port = srv.cfg.SSHPort
			}
			return a.runSSH(cmd.Context(), g, srv, host, port, args[0], args[1:])
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "SSH gateway host (default: config ssh_host, then the gateway address the server gives for the service, then the server's host)")
	cmd.Flags().IntVar(&port, "port", 0, fmt.Sprintf("SSH gateway port (default: config ssh_port, then the port of the server's gateway address for the service, then a Port your ssh config sets for the host, then %d)", DefaultGatewayPort))
	noBrowserFlag(cmd, g)
	deviceFlag(cmd, g)
	return cmd
}

func (a *App) runSSH(ctx context.Context, g *globals, srv *server, host string, port int, service string, remote []string) error {
	s, err := a.session()
	if err != nil {
		return err
	}
	if _, _, err := a.ensureCert(ctx, g, srv, false, false); err != nil {
		return err
	}
	host, port = a.gatewayAddress(ctx, srv, service, host, port)
	retried := false
	for {
		code, stderr, err := a.execSSH(ctx, s, host, port, service, remote)
		if err != nil {
			return err
		}
		if bytes.Contains(stderr, []byte(tokens.SSHRevokedError)) && !retried {
			retried = true
			if err := a.renewRevokedCert(ctx, g, srv); err != nil {
				return err
			}
			continue
		}
		ch, denied := parseDenial(stderr)
		if !denied {
			if code != 0 {
				return &exitError{code: code, err: fmt.Errorf("ssh exited with %d", code), silent: true}
			}
			return nil
		}
		if ch == nil || retried {
			return &exitError{code: ExitError, err: errors.New("the SSH gateway refused access"), silent: retried}
		}
		retried = true
		fmt.Fprintln(a.Stderr, explain(ch))
		t, err := a.validTokens(ctx, srv)
		if err != nil {
			return err
		}
		if c, err := t.claims(); err == nil && meets(c, *ch, a.Now()) {
			// The session is already strong enough and only the
			// certificate is older than it.
			if _, err := a.issueCertificate(ctx, srv, t, false); err != nil {
				return err
			}
			continue
		}
		if !a.interactive(g) {
			return a.stepUpNeeded(*ch)
		}
		if err := a.login(ctx, srv, loginOptions{force: true, req: *ch, noBrowser: g.noBrowser, device: g.device, report: a.Stderr}); err != nil {
			return err
		}
	}
}

// renewRevokedCert replaces a certificate on the server's revocation list.
// Signing out of a browser or leaving an organization revokes certificates
// and leaves the CLI's tokens good: then a new certificate for the same
// login does. Where the tokens went with it (a revoked grant, a password
// change, MFA turned off), the server refuses, and a new login does.
func (a *App) renewRevokedCert(ctx context.Context, g *globals, srv *server) error {
	fmt.Fprintln(a.Stderr, "The server revoked this SSH certificate; asking for a new one.")
	t, err := a.validTokens(ctx, srv)
	if err == nil {
		_, err = a.issueCertificate(ctx, srv, t, true)
	}
	var unreachable *unreachableError
	if err == nil || errors.As(err, &unreachable) {
		return err
	}
	if !a.interactive(g) {
		return fmt.Errorf("%w (run: stepup login)", err)
	}
	fmt.Fprintf(a.Stderr, "%v; logging in again.\n", err)
	if err := a.login(ctx, srv, loginOptions{force: true, noBrowser: g.noBrowser, device: g.device, report: a.Stderr}); err != nil {
		return err
	}
	_, _, err = a.ensureCert(ctx, g, srv, false, true)
	return err
}

// serviceLookupTimeout bounds asking the server where a service's gateway
// listens: ssh goes ahead on the defaults rather than wait longer.
const serviceLookupTimeout = 3 * time.Second

// gatewayAddress fills in what --host and --port (or ssh_host and
// ssh_port) left open. Where no host was chosen, the server's address for
// the service's gateway (GET /api/services/{service}) gives the host and,
// unless one was chosen, the port. Else the host is the server's and the
// port is gatewayPort's. A host that was chosen keeps the person's own ssh
// configuration for it in charge, so the server is not asked.
func (a *App) gatewayAddress(ctx context.Context, srv *server, service, host string, port int) (string, int) {
	if host == "" {
		if h, p, ok := a.serviceAddress(ctx, srv, service); ok {
			host = h
			if port == 0 {
				port = p
			}
		}
	}
	if host == "" {
		host = srv.domain()
	}
	if port == 0 {
		port = gatewayPort(ctx, sshDest(service, host))
	}
	return host, port
}

// serviceAddress asks the server where the service's gateway listens. An
// older server (404), a service without an address, a slow or unreachable
// server or a malformed answer all mean "not known": ok is false, and
// nothing is said, since ssh still has its defaults to try.
func (a *App) serviceAddress(ctx context.Context, srv *server, service string) (host string, port int, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, serviceLookupTimeout)
	defer cancel()
	status, body, _, err := a.callAPI(ctx, srv, http.MethodGet, "/api/services/"+url.PathEscape(service), "")
	if err != nil || status != http.StatusOK {
		return "", 0, false
	}
	var v struct {
		SSHAddress string `json:"ssh_address"`
	}
	if json.Unmarshal(body, &v) != nil || v.SSHAddress == "" {
		return "", 0, false
	}
	h, p, err := net.SplitHostPort(v.SSHAddress)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	// ssh would read a host that starts with "-" as an option.
	if err != nil || n == 0 || h == "" || strings.HasPrefix(h, "-") || strings.ContainsAny(h, " \t\r\n@/") {
		return "", 0, false
	}
	return h, int(n), true
}

// gatewayPort is the port to give ssh when neither --port nor ssh_port
// chose one: stepup-gateway's default, except where a Host block of the
// person's own ssh configuration sets a port for the gateway; then there
// is no -p (0) and ssh applies theirs. ssh -G cannot tell "Port 22" from
// no Port at all, so port 22 takes ssh_port or --port.
func gatewayPort(ctx context.Context, dest string) int {
	if p := sshSettings(ctx, []string{dest})["port"]; p != "" && p != "22" {
		return 0
	}
	return DefaultGatewayPort
}

// sshDest is ssh's destination for a service on the gateway host.
func sshDest(name, host string) string { return name + "@" + host }

// execSSH runs ssh with the session's key and certificate, passing its
// standard error through while keeping a copy to read a refusal from.
func (a *App) execSSH(ctx context.Context, s *session, host string, port int, svc string, remote []string) (int, []byte, error) {
	dest := []string{sshDest(svc, host)}
	if port != 0 {
		dest = append([]string{"-p", strconv.Itoa(port)}, dest...)
	}
	args := []string{
		"-i", s.path(keyFile),
		"-o", "CertificateFile=" + s.path(certFile),
		"-o", "IdentitiesOnly=yes",
	}
	if !personKnowsHost(ctx, dest) {
		args = append(args, pinHostKey(s)...)
	}
	args = append(args, dest...)
	args = append(args, remote...)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var buf bytes.Buffer
	cmd.Stdin = a.Stdin
	cmd.Stdout = a.Stdout
	cmd.Stderr = io.MultiWriter(a.Stderr, &buf)
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), buf.Bytes(), nil
	case errors.Is(err, exec.ErrNotFound):
		return 0, nil, errors.New("ssh is not installed (stepup ssh runs the OpenSSH client)")
	case err != nil:
		return 0, nil, err
	}
	return 0, buf.Bytes(), nil
}

// knownHostsFile is where stepup ssh pins gateways' host keys.
const knownHostsFile = "known_hosts"

// pinHostKey trusts a gateway's host key on first use and refuses a
// changed one with ssh's own warning. A first contact then works from a
// script, where ssh's default would stop to ask nobody, and the pins stay
// out of the person's own known_hosts.
func pinHostKey(s *session) []string {
	path := s.path(knownHostsFile)
	if strings.ContainsAny(path, " \t") {
		path = `"` + path + `"`
	}
	return []string{"-o", "UserKnownHostsFile=" + path, "-o", "StrictHostKeyChecking=accept-new"}
}

// personKnowsHost reports whether a known_hosts file the person's ssh
// reads already lists the gateway. Then their ssh checks it as it always
// does: those keys and that policy were chosen by them (or their
// company), and a pin of our own could only disagree with them. `ssh -G`
// answers for their whole configuration (Host blocks, HostKeyAlias,
// their own file names) without our reading it; if it cannot, we pin.
func personKnowsHost(ctx context.Context, dest []string) bool {
	cfg := sshSettings(ctx, dest)
	if cfg["hostname"] == "" || cfg["port"] == "" {
		return false
	}
	// ssh looks a HostKeyAlias up without the port, and a host name with
	// it; knownhosts leaves port 22 out as ssh does.
	name := net.JoinHostPort(cfg["hostname"], cfg["port"])
	if alias := cfg["hostkeyalias"]; alias != "" && alias != "none" {
		name = net.JoinHostPort(alias, "22")
	}
	files := strings.Fields(cfg["userknownhostsfile"] + " " + cfg["globalknownhostsfile"])
	return slices.ContainsFunc(files, func(f string) bool { return listsHost(f, name) })
}

// sshSettings is what the person's ssh would use to reach dest (ssh -G),
// keyed by lower-case option name; empty when ssh cannot say.
func sshSettings(ctx context.Context, dest []string) map[string]string {
	cfg := map[string]string{}
	out, err := exec.CommandContext(ctx, "ssh", append([]string{"-G"}, dest...)...).Output()
	if err != nil {
		return cfg
	}
	for line := range strings.Lines(string(out)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			cfg[k] = v
		}
	}
	return cfg
}

// listsHost reports whether the known_hosts file lists a key for name
// ("host:port"). knownhosts answers only "is this key right", so it is
// asked about a key nobody has: a mismatch means the host is listed.
func listsHost(file, name string) bool {
	check, err := knownhosts.New(file)
	if err != nil {
		return false
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return false
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return false
	}
	var ke *knownhosts.KeyError
	return errors.As(check(name, &net.TCPAddr{}, probe), &ke) && len(ke.Want) > 0
}

// parseDenial finds the gateway's refusal; the challenge is nil when the
// refusal demands nothing a login could give (e.g. not a member).
func parseDenial(stderr []byte) (*challenge, bool) {
	if !bytes.Contains(stderr, []byte(deniedMessage)) {
		return nil, false
	}
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if p, ok := strings.CutPrefix(line, "Parameters:"); ok {
			var ch challenge
			if json.Unmarshal([]byte(strings.TrimSpace(p)), &ch) == nil && (len(ch.AMR) > 0 || ch.MaxAge != nil) {
				return &ch, true
			}
		}
	}
	return nil, true
}

func explain(ch *challenge) string {
	var b strings.Builder
	for _, m := range ch.AMR {
		switch {
		case m == tokens.MethodMFA:
			b.WriteString("Multi-factor authentication (MFA) is required.\n")
		case m == tokens.MethodPhishingResistant:
			b.WriteString("Phishing-resistant multi-factor authentication (a passkey) is required.\n")
		case strings.HasPrefix(m, tokens.SSOPrefix):
			fmt.Fprintf(&b, "Single sign-on through %q is required.\n", strings.TrimPrefix(m, tokens.SSOPrefix))
		default:
			fmt.Fprintf(&b, "Authentication method %q is required.\n", m)
		}
	}
	if ch.MaxAge != nil {
		fmt.Fprintf(&b, "A login within the last %s is required.\n", tokens.HumanDuration(time.Duration(*ch.MaxAge)*time.Second))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

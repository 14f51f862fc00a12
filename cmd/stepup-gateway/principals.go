package main

// stepup-gateway principals is the AuthorizedPrincipalsCommand of an
// ordinary OpenSSH server that trusts Stepup's user CA (TrustedUserCAKeys):
// it lets a certificate in only when one of the CAs the server lists at
// GET /ssh/authority signed it and its amr satisfies one organization's
// policy and it is not on the server's revocation list, so plain sshd
// hosts get the same step-up rule as the gateway.
//
// sshd runs it for every certificate offered, with the account being logged
// in to, the key type and the certificate. What it prints on standard
// output are the principals allowed for that account; printing nothing
// refuses. The reason for a refusal goes to standard error, but sshd
// passes that on only when it logs to standard error itself (-e) and points
// it at /dev/null otherwise; so the reason also goes to syslog, under the
// auth facility where sshd's own line about the attempt goes by default.

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/config"
	"github.com/stepup-dev/stepup/internal/gateway"
	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/internal/gateway/revoked"
	"github.com/stepup-dev/stepup/internal/gateway/trust"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

const principalsUsage = "stepup-gateway principals --org ORG [--config FILE] [--issuer URL] [--syslog=false] ACCOUNT KEY-TYPE CERTIFICATE"

// Exit statuses. sshd refuses on anything but 0 and logs the status, so a
// refusal on policy exits 0 (an answer, to be read in our log line) while
// a run that could not reach an answer exits non-zero, which makes sshd
// itself report a fault that every login would otherwise hit silently.
const (
	exitDecided  = 0 // principals printed, or a refusal logged
	exitFailed   = 1 // no answer: configuration, sshd's arguments, or the server
	exitBadUsage = 2
)

// principalsMain is the subcommand as main runs it; it returns the exit
// status.
func principalsMain(args []string) int {
	return runPrincipals(context.Background(), args, os.LookupEnv, os.Stdout, os.Stderr, time.Now)
}

type principalsOptions struct {
	issuer, configPath, org string
	syslog                  bool
	account, keyType, key   string
}

func parsePrincipalsFlags(args []string, stderr io.Writer) (principalsOptions, error) {
	var o principalsOptions
	fs := flag.NewFlagSet("stepup-gateway principals", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\n"+
			"For sshd_config:\n"+
			"  AuthorizedPrincipalsCommand /usr/local/bin/stepup-gateway principals --config /etc/stepup/gateway.yaml --org ORG %%u %%t %%k\n"+
			"  AuthorizedPrincipalsCommandUser nobody\n\n", principalsUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.org, "org", "", "the `organization` whose policy a certificate must satisfy (required)")
	fs.StringVar(&o.configPath, "config", "", "Stepup config `file` with issuer and gateway.client_id/client_secret; STEPUP_* variables apply too")
	fs.StringVar(&o.issuer, "issuer", "", "the Stepup server's base `URL` (default: issuer from the config file)")
	fs.BoolVar(&o.syslog, "syslog", true, "record refusals in syslog (facility auth) as well as on standard error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errUsage
	}
	if o.org == "" {
		fmt.Fprintln(stderr, "stepup-gateway principals: --org is required")
		fs.Usage()
		return o, errUsage
	}
	if fs.NArg() != 3 {
		fmt.Fprintf(stderr, "stepup-gateway principals takes ACCOUNT KEY-TYPE CERTIFICATE (sshd's %%u %%t %%k), got %q\n", fs.Args())
		fs.Usage()
		return o, errUsage
	}
	o.account, o.keyType, o.key = fs.Arg(0), fs.Arg(1), fs.Arg(2)
	return o, nil
}

func runPrincipals(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer, now func() time.Time) int {
	o, err := parsePrincipalsFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitDecided
	}
	if err != nil {
		return exitBadUsage
	}
	log := openReasonLog(o.syslog, stderr)
	defer log.close()

	principal, refusal, err := judge(ctx, o, env, now)
	switch {
	case err != nil:
		log.record(severityError, err.Error())
		return exitFailed
	case principal == "":
		log.record(severityNotice, refusal)
		return exitDecided
	}
	if _, err := fmt.Fprintln(stdout, principal); err != nil {
		log.record(severityError, "writing the principal for sshd: "+err.Error())
		return exitFailed
	}
	return exitDecided
}

// judge returns the principal to print for o's certificate, or why there
// is none: a refusal when the certificate does not qualify, an error when
// no answer could be had. It is the only place that yields a principal,
// and does so only after every check has passed. The checks of the
// certificate itself are the helper's; whether the person may come in is
// the gateway's one decision (gateway.Decide), and its words.
//
// It does not verify the certificate's signature, validity period or
// critical options, and must not be used where sshd does not: sshd checks
// the signature as it parses a certificate, runs the command only for one
// signed by a key in TrustedUserCAKeys, and checks validity and options
// itself afterwards. Which key that was, it checks itself: TrustedUserCAKeys
// may hold more than Stepup's.
func judge(ctx context.Context, o principalsOptions, env func(string) (string, bool), now func() time.Time) (principal, refusal string, err error) {
	file, err := readClientConfig(o.configPath, env)
	if err != nil {
		return "", "", err
	}
	issuer := cmp.Or(o.issuer, file.issuer)
	domain, err := issuerDomain(issuer)
	if err != nil {
		return "", "", err
	}

	blob, err := base64.StdEncoding.DecodeString(o.key)
	if err != nil {
		return "", "", fmt.Errorf("the CERTIFICATE argument is not base64 (%v); sshd_config should pass %%u %%t %%k in that order", err)
	}
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return "", "", fmt.Errorf("the CERTIFICATE argument is not an SSH key: %v", err)
	}
	if key.Type() != o.keyType {
		return "", "", fmt.Errorf("the KEY-TYPE argument %q does not match the key, of type %q; sshd_config should pass %%u %%t %%k in that order", o.keyType, key.Type())
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return "", fmt.Sprintf("refused a plain %s key for account %q: only certificates are admitted", key.Type(), o.account), nil
	}
	what := fmt.Sprintf("certificate ID %q (serial %d) for account %q", cert.KeyId, cert.Serial, o.account)
	if cert.CertType != ssh.UserCert {
		return "", "refused " + what + ": it is not a user certificate", nil
	}
	if cert.KeyId == "" {
		return "", "refused " + what + ": it has no key id (user id)", nil
	}
	// sshd compares the lines printed with the certificate's principals
	// only, not with the account: echoing the principals back would let
	// every member log in to every account on the host, root included.
	if !slices.Contains(cert.ValidPrincipals, o.account) {
		return "", fmt.Sprintf("refused %s: it is for %q, not for that account", what, cert.ValidPrincipals), nil
	}
	// sshd admits a certificate from any key in TrustedUserCAKeys, which
	// may list authorities other than Stepup's; their certificates can
	// carry whatever claims their signer wrote. The checks above only
	// refuse; from here on the certificate is believed, so it must be
	// signed by a key the server lists as its own.
	if refusal, err := checkAuthority(ctx, issuer, cert, what, now); refusal != "" || err != nil {
		return "", refusal, err
	}
	claims, _, err := sshca.ParseClaims(cert, domain)
	if err != nil {
		return "", fmt.Sprintf("refused %s: not a certificate from %s: %v", what, issuer, err), nil
	}

	client, err := access.New(access.Config{Issuer: issuer, ClientID: file.clientID, ClientSecret: file.clientSecret, Now: now})
	if err != nil {
		return "", "", err
	}
	// The revocation list, once: a run is one login. Without it there is
	// no answer (Decide says the list is unavailable).
	list, err := revoked.New(revoked.Config{Issuer: issuer, Now: now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", "", err
	}
	_, _ = list.Refresh(ctx)
	// As at the gateway, through the same decision: a certificate without
	// auth_time is as old as can be, so any max_age refuses it.
	d := gateway.Decide(ctx, gateway.Policy{Access: client, Revocations: list, Now: now}, gateway.Attempt{
		Org: o.org, Username: o.account, UserID: cert.KeyId, AMR: claims.AMR, AuthTime: claims.AuthTime,
		Serial: cert.Serial, Certificate: true,
	})
	switch d.Kind {
	case gateway.Allow:
		return o.account, "", nil
	case gateway.Unavailable:
		return "", "", errors.New(d.HelperLog(what))
	}
	return "", d.HelperLog(what), nil
}

// checkAuthority refuses cert unless its signing key is one of the SSH
// certificate authorities the server at issuer lists (GET /ssh/authority),
// the list the gateway trusts too. Without the list there is no answer.
func checkAuthority(ctx context.Context, issuer string, cert *ssh.Certificate, what string, now func() time.Time) (refusal string, err error) {
	// Warnings about entries that do not parse are the gateway's to log;
	// here such an entry simply trusts nothing.
	authorities, err := trust.New(trust.Config{Issuer: issuer, Now: now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", err
	}
	if err := authorities.Refresh(ctx); err != nil {
		return "", fmt.Errorf("no answer for %s: the SSH certificate authorities: %w", what, err)
	}
	if !authorities.IsUserAuthority(cert.SignatureKey) {
		return fmt.Sprintf("refused %s: signed by %s %s, which is not one of the %d SSH certificate authorities %s lists",
			what, cert.SignatureKey.Type(), ssh.FingerprintSHA256(cert.SignatureKey), authorities.Len(), issuer), nil
	}
	return "", nil
}

// clientSettings are what the command needs from the config file.
type clientSettings struct {
	issuer, clientID, clientSecret string
}

// readClientConfig reads the issuer and the gateway's client credentials.
// It is not readConfig because that one insists on services, which an
// sshd host has no use for: the organization comes from --org.
func readClientConfig(path string, env func(string) (string, bool)) (clientSettings, error) {
	c := &config.Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return clientSettings{}, fmt.Errorf("config: %w", err)
		}
		if c, err = config.Parse(data, path); err != nil {
			return clientSettings{}, fmt.Errorf("config problems: %w", err)
		}
	}
	if err := c.ApplyEnv(env); err != nil {
		return clientSettings{}, fmt.Errorf("config problems: %w", err)
	}
	if c.Gateway.ClientID == "" || c.Gateway.ClientSecret == "" {
		where := cmp.Or(path, "STEPUP_* variables")
		return clientSettings{}, fmt.Errorf("%s: gateway.client_id and gateway.client_secret are required: the client this command asks the server with (grant client_credentials, scope %s)", where, access.Scope)
	}
	return clientSettings{issuer: c.Issuer, clientID: c.Gateway.ClientID, clientSecret: c.Gateway.ClientSecret}, nil
}

// issuerDomain checks issuer as the gateway does and returns its host name,
// which is what the server names the certificate extensions after.
func issuerDomain(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	switch {
	case issuer == "":
		return "", errors.New("give --issuer URL (or issuer in the config file): the Stepup server to ask")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "", fmt.Errorf("issuer %q must be the server's absolute http(s) URL", issuer)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		// The client secret goes there, and the answer admits people.
		return "", fmt.Errorf("issuer %q uses http on a host that is not loopback; use https", issuer)
	}
	return u.Hostname(), nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Syslog severities used for the reason lines.
const (
	severityError  = 3
	severityNotice = 5
)

// facilityAuth is where sshd logs by default (SyslogFacility AUTH), so a
// refusal's reason sits next to sshd's own line about the same attempt.
const facilityAuth = 4

// syslogSockets are where local syslog daemons listen: Linux, macOS, the
// BSDs. A variable, so that tests can listen instead.
var syslogSockets = []string{"/dev/log", "/var/run/syslog", "/var/run/log"}

// reasonLog records why the command refused or failed.
type reasonLog struct {
	stderr io.Writer
	syslog net.Conn // nil: none
}

func openReasonLog(useSyslog bool, stderr io.Writer) *reasonLog {
	l := &reasonLog{stderr: stderr}
	if !useSyslog {
		return l
	}
	// A host without a syslog socket (a container, say) has sshd's own line
	// and standard error; an unrecorded reason is no cause to change the
	// answer.
	for _, path := range syslogSockets {
		if c, err := net.Dial("unixgram", path); err == nil {
			l.syslog = c
			break
		}
	}
	return l
}

func (l *reasonLog) record(severity int, msg string) {
	// One line per record, whatever the message quotes.
	msg = strings.Join(strings.Fields(msg), " ")
	fmt.Fprintln(l.stderr, "stepup-gateway principals:", msg)
	if l.syslog != nil {
		// RFC 3164's format, as local syslog daemons and journald read it.
		fmt.Fprintf(l.syslog, "<%d>%s stepup-gateway[%d]: principals: %s", facilityAuth<<3|severity, time.Now().Format(time.Stamp), os.Getpid(), msg)
	}
}

func (l *reasonLog) close() {
	if l.syslog != nil {
		_ = l.syslog.Close()
	}
}

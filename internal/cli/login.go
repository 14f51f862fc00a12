package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/tokens"
)

// loginOptions are what a login asks of the server; step-up reuses them
// with the methods a resource server demanded.
type loginOptions struct {
	force bool
	// req is what the login must meet: methods and how recent.
	req tokens.Requirements
	// org is the organization a step-up is for (acr_values), when known.
	org       string
	noBrowser bool
	// device is --device: a device login (RFC 8628) instead of the
	// browser; unset, as the current session logged in (useDevice).
	device  optionalBool
	port    int
	timeout time.Duration
	// report is where the login says who is logged in: stdout for
	// stepup login, stderr for a login inside another command, whose
	// stdout is the answer a script reads (JSON, a remote command's
	// output, git's protocol).
	report io.Writer
}

func (a *App) loginCmd(g *globals) *cobra.Command {
	o := loginOptions{}
	var method string
	var maxAge int
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in through the browser (or, with --device, a code on another device) and get tokens and an SSH certificate",
		Example: `  stepup login
  stepup login --method mfa
  stepup login -f --method mfa,sso:acme --max-age 300
  stepup login --no-browser   # print the URL to open elsewhere
  stepup login --device       # no browser here: enter a code on another device
  stepup login --port 8085    # where a firewall allows only that loopback port`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.port < 0 || o.port > 65535 {
				return usageError(cmd, fmt.Sprintf("--port takes a port number from 1 to 65535, not %d", o.port))
			}
			o.req.AMR = splitMethods(method)
			if maxAge >= 0 {
				secs := int64(maxAge)
				o.req.MaxAge = &secs
			}
			o.noBrowser, o.device = g.noBrowser, g.device
			srv, err := a.discover(cmd.Context(), g)
			if err != nil {
				return err
			}
			return a.login(cmd.Context(), srv, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.force, "force", "f", false, "log in again even when the current session is enough")
	f.StringVar(&method, "method", "", "authentication methods to require, comma-separated (e.g. mfa or mfa,sso:acme)")
	f.IntVar(&maxAge, "max-age", -1, "require an authentication at most this many seconds old (0: a new one now)")
	noBrowserFlag(cmd, g)
	deviceFlag(cmd, g)
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for the browser (a device login waits until its code expires)")
	f.IntVar(&o.port, "port", 0, "loopback port for the browser to come back to (default: a free one)")
	return cmd
}

func splitMethods(s string) []string {
	var out []string
	for _, m := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, m)
	}
	return out
}

func (a *App) login(ctx context.Context, srv *server, o loginOptions) error {
	s, err := a.session()
	if err != nil {
		return err
	}
	if o.report == nil {
		o.report = a.Stdout
	}
	if !o.force {
		if t, err := a.validTokens(ctx, srv); err == nil {
			if c, err := t.claims(); err == nil && meets(c, o.req, a.Now()) {
				fmt.Fprintf(o.report, "Already logged in as %s (%s). Use -f to log in again.\n", displayName(t, c.Subject), strings.Join(c.AMR, " "))
				return nil
			}
		}
	}
	if o.timeout <= 0 {
		o.timeout = 5 * time.Minute
	}
	if o.port == 0 {
		o.port = srv.cfg.LoginPort
	}
	var tok *oauth2.Token
	if a.useDevice(srv, o) {
		tok, err = a.deviceLogin(ctx, srv, o)
	} else {
		bl := &browserLogin{
			srv: srv, app: a, req: o.req, org: o.org,
			noBrowser: o.noBrowser, port: o.port, timeout: o.timeout, open: a.OpenURL, out: a.Stderr,
		}
		tok, err = bl.run(ctx)
	}
	if err != nil {
		return err
	}
	t := &storedTokens{
		Issuer:       srv.Issuer,
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		Expiry:       tokenExpiry(tok),
	}
	if id, ok := tok.Extra("id_token").(string); ok {
		t.IDToken = id
	}
	c, err := t.claims()
	if err != nil {
		return err
	}
	t.Username = a.username(ctx, srv, t.AccessToken)
	// Taking the lock keeps a concurrent refresh from writing an older
	// session over this one.
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	err = s.save(t)
	unlock()
	if err != nil {
		return err
	}
	if _, err := a.issueCertificate(ctx, srv, t, false); err != nil {
		fmt.Fprintf(a.Stderr, "Logged in, but no SSH certificate: %v\n", err)
	}
	fmt.Fprintf(o.report, "Logged in as %s (%s)\n", displayName(t, c.Subject), strings.Join(c.AMR, " "))
	return nil
}

func displayName(t *storedTokens, sub string) string {
	if t.Username != "" {
		return t.Username
	}
	return sub
}

// username asks the server, since the access token carries only the user
// id; an empty answer falls back to the id.
func (a *App) username(ctx context.Context, srv *server, access string) string {
	var me struct {
		Username string `json:"username"`
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/me", nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&me) != nil {
		return ""
	}
	return me.Username
}

// loginCommand is what a person runs to satisfy a challenge, printed
// where the CLI may not open a browser itself.
func loginCommand(req tokens.Requirements) string {
	cmd := "stepup login"
	if len(req.AMR) > 0 {
		cmd += " --method " + strings.Join(req.AMR, ",")
	}
	if req.MaxAge != nil {
		cmd += fmt.Sprintf(" --max-age %d", *req.MaxAge)
	}
	return cmd
}

// stepUpNeeded is the exit of a non-interactive command that met a
// challenge.
func (a *App) stepUpNeeded(req tokens.Requirements) error {
	fmt.Fprintln(a.Stderr, "Additional authentication is required. Run:")
	fmt.Fprintln(a.Stderr, "  "+loginCommand(req))
	return &exitError{code: ExitStepUp, err: errors.New("step-up required"), silent: true}
}

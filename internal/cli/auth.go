package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *App) authTokenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "auth:token",
		Short: "Print a valid access token, refreshing it when needed",
		Example: `  curl -H "Authorization: Bearer $(stepup auth:token)" https://api.example.com/api/me
  STEPUP_TOKEN=… stepup api GET /api/me   # use a given token instead`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := a.discover(cmd.Context(), g)
			if err != nil {
				return err
			}
			t, err := a.validTokens(cmd.Context(), srv)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, t.AccessToken)
			return nil
		},
	}
}

func (a *App) authInfoCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "auth:info",
		Short:   "Show who is logged in and how",
		Example: `  stepup auth:info`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := a.discover(cmd.Context(), g)
			if err != nil {
				return err
			}
			t, err := a.validTokens(cmd.Context(), srv)
			if err != nil {
				return err
			}
			c, err := t.claims()
			if err != nil {
				return err
			}
			w := a.Stdout
			fmt.Fprintf(w, "Server: %s\n", srv.Issuer)
			if t.Username != "" {
				fmt.Fprintf(w, "User: %s (%s)\n", t.Username, c.Subject)
			} else {
				fmt.Fprintf(w, "User: %s\n", c.Subject)
			}
			fmt.Fprintf(w, "Authentication methods: %s\n", strings.Join(c.AMR, " "))
			if c.AuthTime > 0 {
				fmt.Fprintf(w, "Authenticated at: %s\n", time.Unix(c.AuthTime, 0).Local().Format(time.DateTime))
			}
			exp := time.Unix(c.Expiry, 0)
			fmt.Fprintf(w, "Access token expires: %s (in %s)\n", exp.Local().Format(time.DateTime), exp.Sub(a.Now()).Round(time.Second))
			return nil
		},
	}
}

func (a *App) logoutCmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "Revoke the session's tokens and delete them and the SSH certificate",
		Example: `  stepup logout
  stepup logout --all   # also delete the SSH key pair`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.session()
			if err != nil {
				return err
			}
			t, err := s.load()
			if err != nil {
				return err
			}
			if t == nil {
				fmt.Fprintln(a.Stdout, "You are not logged in.")
			} else {
				// Revocation is best effort: the local copies go either way,
				// and the person learns when the server kept them alive.
				if srv, err := a.discover(cmd.Context(), g); err != nil {
					fmt.Fprintf(a.Stderr, "Warning: the tokens were not revoked: %v\n", err)
				} else if err := a.revoke(cmd, srv, t); err != nil {
					fmt.Fprintf(a.Stderr, "Warning: the tokens were not revoked: %v\n", err)
				}
				unlock, err := s.lock(cmd.Context())
				if err != nil {
					return err
				}
				err = s.remove()
				unlock()
				if err != nil {
					return err
				}
				fmt.Fprintln(a.Stdout, "Logged out.")
			}
			os.Remove(s.path(certFile))
			if all {
				os.Remove(s.path(keyFile))
				os.Remove(s.path(keyFile + ".pub"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "also delete the SSH key pair")
	return cmd
}

// revoke revokes the refresh token, which takes the whole grant (and its
// access tokens) with it.
func (a *App) revoke(cmd *cobra.Command, srv *server, t *storedTokens) error {
	if srv.RevocationEndpoint == "" {
		return fmt.Errorf("the server has no revocation endpoint")
	}
	tok, hint := t.RefreshToken, "refresh_token"
	if tok == "" {
		tok, hint = t.AccessToken, "access_token"
	}
	form := url.Values{"token": {tok}, "token_type_hint": {hint}, "client_id": {srv.ClientID}}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, srv.RevocationEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return &unreachableError{url: srv.URL, err: err}
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the server answered %s", resp.Status)
	}
	return nil
}

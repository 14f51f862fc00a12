package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stepup-dev/stepup/tokens"
)

// challenge is what a resource server demands in a step-up answer: its
// whole requirement (RFC 9470).
type challenge = tokens.Requirements

func (a *App) apiCmd(g *globals) *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "api METHOD PATH",
		Short: "Call the Stepup API with the current token",
		Example: `  stepup api GET /api/me
  stepup api PATCH /api/orgs/acme/security --data '{"mfa_required": true}'
  stepup api GET /api/orgs/acme --no-browser   # a step-up prints the login URL`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srv, err := a.discover(cmd.Context(), g)
			if err != nil {
				return err
			}
			method, path := strings.ToUpper(args[0]), args[1]
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			status, body, err := a.callAPIWithStepUp(cmd.Context(), g, srv, method, path, data)
			if err != nil {
				return err
			}
			a.Stdout.Write(body)
			if len(body) > 0 && body[len(body)-1] != '\n' {
				fmt.Fprintln(a.Stdout)
			}
			if status >= 400 {
				return &exitError{code: ExitError, err: fmt.Errorf("the server answered %d", status)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "JSON request body")
	noBrowserFlag(cmd, g)
	deviceFlag(cmd, g)
	return cmd
}

// callAPIWithStepUp calls the API and, when the server answers with a
// step-up challenge, logs in again with what it demands and retries once;
// without a person at the terminal it says what to run instead.
func (a *App) callAPIWithStepUp(ctx context.Context, g *globals, srv *server, method, path, data string) (int, []byte, error) {
	status, body, ch, err := a.callAPI(ctx, srv, method, path, data)
	if err != nil || ch == nil {
		return status, body, err
	}
	if !a.interactive(g) {
		return 0, nil, a.stepUpNeeded(*ch)
	}
	fmt.Fprintf(a.Stderr, "The server requires more authentication (%s); logging in again.\n", strings.Join(ch.AMR, " "))
	o := loginOptions{force: true, req: *ch, noBrowser: g.noBrowser, device: g.device, report: a.Stderr, org: orgOfPath(path)}
	if err := a.login(ctx, srv, o); err != nil {
		return 0, nil, err
	}
	if status, body, ch, err = a.callAPI(ctx, srv, method, path, data); err != nil {
		return 0, nil, err
	}
	if ch != nil {
		return 0, nil, errors.New("the server still requires more authentication after logging in again")
	}
	return status, body, nil
}

// callAPI returns the challenge instead of the body when the server asks
// for a step-up.
func (a *App) callAPI(ctx context.Context, srv *server, method, path, data string) (int, []byte, *challenge, error) {
	t, err := a.validTokens(ctx, srv)
	if err != nil {
		return 0, nil, nil, err
	}
	var body io.Reader
	if data != "" {
		if !json.Valid([]byte(data)) {
			return 0, nil, nil, errors.New("--data is not valid JSON")
		}
		body = strings.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.AccessToken)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return 0, nil, nil, &unreachableError{url: srv.URL, err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		var e struct {
			Error string `json:"error"`
			challenge
		}
		if json.Unmarshal(bytes.TrimSpace(raw), &e) == nil && e.Error == tokens.ErrorInsufficientAuthentication {
			return resp.StatusCode, raw, &e.challenge, nil
		}
	}
	return resp.StatusCode, raw, nil, nil
}

// orgOfPath is the organization an API path is about, if any, so that the
// login pages can say whose requirement a step-up meets.
func orgOfPath(path string) string {
	rest, ok := strings.CutPrefix(path, "/api/orgs/")
	if !ok {
		return ""
	}
	org, _, _ := strings.Cut(rest, "/")
	org, _, _ = strings.Cut(org, "?")
	return org
}

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// DefaultClientID is the public client every Stepup server registers for
// the CLI.
const DefaultClientID = "stepup-cli"

// fileConfig is config.json in the config directory. Every key is
// optional; flags and the environment win over it.
type fileConfig struct {
	URL      string `json:"url,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	SSHHost  string `json:"ssh_host,omitempty"`
	SSHPort  int    `json:"ssh_port,omitempty"`
	// LoginPort is the loopback port every login comes back to, the step-up
	// logins inside api and ssh included, for a firewall that allows only
	// that one; login --port wins over it.
	LoginPort int `json:"login_port,omitempty"`
}

// configDir is where the CLI keeps its state: XDG first, so a person (or
// a test) can keep several identities apart.
func (a *App) configDir() (string, error) {
	if x := a.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "stepup"), nil
	}
	home := a.Getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the config directory: set XDG_CONFIG_HOME or HOME: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".config", "stepup"), nil
}

func (a *App) readConfig() (fileConfig, error) {
	var c fileConfig
	dir, err := a.configDir()
	if err != nil {
		return c, err
	}
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s is not valid JSON: %w", path, err)
	}
	if c.LoginPort < 0 || c.LoginPort > 65535 {
		return c, fmt.Errorf("%s: login_port takes a port number from 1 to 65535, not %d", path, c.LoginPort)
	}
	return c, nil
}

// server is a Stepup server as its discovery document describes it.
type server struct {
	URL      string // as configured, without a trailing slash
	ClientID string
	cfg      fileConfig

	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`
	UserinfoEndpoint      string `json:"userinfo_endpoint"`
	IssParameterSupported bool   `json:"authorization_response_iss_parameter_supported"`
}

// domain is the suffix of the certificate's token extensions, which the
// server takes from its issuer's host name.
func (s *server) domain() string {
	u, err := url.Parse(s.Issuer)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// unreachableError says which server could not be reached, because a bare
// "connection refused" doesn't tell the person which setting to fix.
type unreachableError struct {
	url string
	err error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("Cannot reach the Stepup server at %s: %v", e.url, e.err)
}
func (e *unreachableError) Unwrap() error { return e.err }

func (a *App) serverURL(g *globals) (string, fileConfig, error) {
	cfg, err := a.readConfig()
	if err != nil {
		return "", cfg, err
	}
	u := g.url
	if u == "" {
		u = a.Getenv("STEPUP_URL")
	}
	if u == "" {
		u = cfg.URL
	}
	if u == "" {
		return "", cfg, errors.New("no Stepup server configured: pass --url, set STEPUP_URL, or put {\"url\": \"…\"} in the config file")
	}
	return strings.TrimRight(u, "/"), cfg, nil
}

// discover reads the server's discovery document, so that endpoints are
// never guessed.
func (a *App) discover(ctx context.Context, g *globals) (*server, error) {
	base, cfg, err := a.serverURL(g)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, fmt.Errorf("bad server URL %q: %w", base, err)
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return nil, &unreachableError{url: base, err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, &unreachableError{url: base, err: fmt.Errorf("discovery answered %s", resp.Status)}
	}
	s := &server{URL: base, ClientID: DefaultClientID, cfg: cfg}
	if cfg.ClientID != "" {
		s.ClientID = cfg.ClientID
	}
	if err := json.Unmarshal(body, s); err != nil || s.Issuer == "" || s.TokenEndpoint == "" || s.AuthorizationEndpoint == "" {
		return nil, &unreachableError{url: base, err: errors.New("the discovery document is not a Stepup server's")}
	}
	return s, nil
}

package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/tokens"
)

// refreshMargin is how long before expiry a token counts as expired, so a
// token handed to a script doesn't die on its way to the server.
const refreshMargin = 60 * time.Second

// storedTokens is tokens.json.
type storedTokens struct {
	Issuer       string    `json:"issuer"`
	Username     string    `json:"username,omitempty"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	IDToken      string    `json:"id_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
}

// claims decodes the access token's payload without checking its
// signature: the CLI only reads its own token to decide what to do, and
// the server checks it on every use.
func (t *storedTokens) claims() (tokens.AccessClaims, error) {
	return decodeClaims(t.AccessToken)
}

func decodeClaims(jwt string) (tokens.AccessClaims, error) {
	var c tokens.AccessClaims
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return c, errors.New("the access token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, fmt.Errorf("the access token's payload is not base64url: %w", err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("the access token's payload is not JSON: %w", err)
	}
	return c, nil
}

// session is the state under the config directory.
type session struct {
	app *App
	dir string
}

func (a *App) session() (*session, error) {
	dir, err := a.configDir()
	if err != nil {
		return nil, err
	}
	return &session{app: a, dir: dir}, nil
}

func (s *session) path(name string) string { return filepath.Join(s.dir, name) }

func (s *session) mkdir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", s.dir, err)
	}
	return nil
}

// load returns nil without error when nobody is logged in.
func (s *session) load() (*storedTokens, error) {
	b, err := os.ReadFile(s.path("tokens.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var t storedTokens
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v); run stepup login -f", s.path("tokens.json"), err)
	}
	return &t, nil
}

// save replaces the file in one rename, so a concurrent reader never sees
// half a file, and the temporary file is 0600 from its first byte.
func (s *session) save(t *storedTokens) error {
	if err := s.mkdir(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path("tokens.json"), b, 0o600)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func (s *session) remove() error {
	err := os.Remove(s.path("tokens.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// lock takes the exclusive lock that serializes refreshes: the server
// rotates refresh tokens and treats a reused one as theft, so two
// processes must never refresh with the same one.
func (s *session) lock(ctx context.Context) (unlock func(), err error) {
	if err := s.mkdir(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.path("tokens.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("cannot lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// errNotLoggedIn is answered when there is no session to use.
var errNotLoggedIn = errors.New("you are not logged in; run: stepup login")

// errSSOExpired ends the session: the server refuses every refresh once
// the upstream SSO session has lapsed.
var errSSOExpired = errors.New("Your SSO session has expired. You have been logged out. Run: stepup login")

// validTokens returns tokens whose access token lives at least
// refreshMargin longer, refreshing them under the lock when needed.
// It returns errNotLoggedIn when there is no session.
func (a *App) validTokens(ctx context.Context, srv *server) (*storedTokens, error) {
	if tok := a.Getenv("STEPUP_TOKEN"); tok != "" {
		if strings.HasPrefix(tok, apiTokenPrefix) {
			return a.exchangeAPIToken(ctx, srv, tok)
		}
		t := &storedTokens{Issuer: srv.Issuer, AccessToken: tok}
		if c, err := t.claims(); err == nil {
			t.Expiry = time.Unix(c.Expiry, 0)
		}
		return t, nil
	}
	s, err := a.session()
	if err != nil {
		return nil, err
	}
	t, err := s.load()
	if err != nil || t == nil {
		return nil, errors.Join(err, errNotLoggedIn)
	}
	if t.Issuer != srv.Issuer {
		return nil, fmt.Errorf("you are logged in to %s, not %s; run: stepup login", t.Issuer, srv.Issuer)
	}
	if t.Expiry.Sub(a.Now()) > refreshMargin {
		return t, nil
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have refreshed while we waited for the lock;
	// its refresh token is the only one still good.
	t, err = s.load()
	if err != nil || t == nil {
		return nil, errors.Join(err, errNotLoggedIn)
	}
	if t.Expiry.Sub(a.Now()) > refreshMargin {
		return t, nil
	}
	if t.RefreshToken == "" {
		return nil, errors.New("your access token has expired; run: stepup login")
	}
	nt, err := a.oauthConfig(srv, "").TokenSource(a.oauthContext(ctx), &oauth2.Token{RefreshToken: t.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			if strings.Contains(re.ErrorDescription, "SSO session has expired") {
				s.remove()
				return nil, errSSOExpired
			}
			return nil, fmt.Errorf("your session has ended (%s); run: stepup login", re.ErrorDescription)
		}
		return nil, a.httpError(srv, err)
	}
	t.AccessToken = nt.AccessToken
	t.Expiry = tokenExpiry(nt)
	if nt.RefreshToken != "" {
		t.RefreshToken = nt.RefreshToken
	}
	if id, ok := nt.Extra("id_token").(string); ok && id != "" {
		t.IDToken = id
	}
	if err := s.save(t); err != nil {
		return nil, err
	}
	return t, nil
}

// tokenExpiry prefers the access token's own exp: x/oauth2 derives
// Expiry from expires_in and the local clock, which may disagree with the
// server's.
func tokenExpiry(tok *oauth2.Token) time.Time {
	if c, err := decodeClaims(tok.AccessToken); err == nil && c.Expiry > 0 {
		return time.Unix(c.Expiry, 0)
	}
	return tok.Expiry
}

// meets reports whether a token's authentication is enough for req, by
// the one policy function.
func meets(c tokens.AccessClaims, req tokens.Requirements, now time.Time) bool {
	var at time.Time
	if c.AuthTime > 0 {
		at = time.Unix(c.AuthTime, 0)
	}
	return tokens.Missing(req, c.AMR, at, now).Satisfied()
}

// apiTokenPrefix starts the API tokens people create for automation
// (POST /api/me/api-tokens); STEPUP_TOKEN may hold one.
const apiTokenPrefix = "stpa_"

// exchangeAPIToken trades an API token for a short-lived access token
// (grant_type=api_token); nothing is stored, automation runs without a
// session.
func (a *App) exchangeAPIToken(ctx context.Context, srv *server, apiToken string) (*storedTokens, error) {
	cfg := a.oauthConfig(srv, "")
	tok, err := cfg.Exchange(a.oauthContext(ctx), "",
		oauth2.SetAuthURLParam("grant_type", "api_token"), oauth2.SetAuthURLParam("api_token", apiToken))
	if err != nil {
		return nil, fmt.Errorf("the API token in STEPUP_TOKEN was refused: %w", a.httpError(srv, err))
	}
	t := &storedTokens{Issuer: srv.Issuer, AccessToken: tok.AccessToken, Expiry: tok.Expiry}
	if c, err := t.claims(); err == nil {
		t.Expiry = time.Unix(c.Expiry, 0)
	}
	return t, nil
}

func (a *App) oauthConfig(srv *server, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    srv.ClientID,
		RedirectURL: redirect,
		Scopes:      []string{"openid", "offline_access", "profile", "email"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   srv.AuthorizationEndpoint,
			TokenURL:  srv.TokenEndpoint,
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

func (a *App) oauthContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, a.HTTP)
}

// httpError names the server for transport failures and leaves the
// server's own answers alone.
func (a *App) httpError(srv *server, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return fmt.Errorf("the server refused: %s: %s", re.ErrorCode, re.ErrorDescription)
		}
		return fmt.Errorf("the server answered %s", re.Response.Status)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &unreachableError{url: srv.URL, err: err}
}

package load

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// httpClient is a cookie-less client on the shared transport.
func (r *runner) httpClient() *http.Client {
	return &http.Client{Transport: r.transport, Timeout: r.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// userToken gets a new grant of the user's: the first call logs in with
// the password, later ones reuse that browser session, so that setting up
// many workers costs one password check and stays clear of the per-account
// login throttle. Calls are serialized.
func (r *runner) userToken(ctx context.Context) (*oauth2.Token, error) {
	r.sessionMu.Lock()
	defer r.sessionMu.Unlock()
	if r.session == nil {
		r.session = r.newBrowser()
	}
	tok, status, err := r.session.login(ctx)
	if err != nil {
		r.session = nil // start from a fresh browser next time
		return nil, fmt.Errorf("login as %s with client %s (status %d): %w", r.o.Username, r.o.PublicClientID, status, err)
	}
	return tok, nil
}

// confidentialClient is the client_credentials configuration.
func (r *runner) confidentialClient() *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID: r.o.ClientID, ClientSecret: r.o.ClientSecret, TokenURL: r.endpoint("/oauth2/token"),
		AuthStyle: oauth2.AuthStyleInHeader, // client_secret_basic; no auto-detection retries
	}
}

type clientCredentialsWorker struct {
	r      *runner
	cfg    *clientcredentials.Config
	client *http.Client
}

func (w *clientCredentialsWorker) setup(context.Context) error {
	w.cfg, w.client = w.r.confidentialClient(), w.r.httpClient()
	return nil
}

func (w *clientCredentialsWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	sw.start()
	tok, err := w.cfg.Token(withClient(ctx, w.client))
	sw.stop()
	if err != nil {
		status, err := tokenError(err)
		return status, false, err
	}
	w.r.sawTokens(tok)
	return http.StatusOK, false, nil
}

type refreshWorker struct {
	r       *runner
	cfg     *oauth2.Config
	client  *http.Client
	refresh string
}

func (w *refreshWorker) setup(ctx context.Context) error {
	w.cfg, w.client = w.r.publicClient(), w.r.httpClient()
	tok, err := w.r.userToken(ctx)
	if err != nil {
		return err
	}
	if tok.RefreshToken == "" {
		return fmt.Errorf("client %s got no refresh token: it needs the offline_access scope and the refresh_token grant", w.r.o.PublicClientID)
	}
	w.refresh = tok.RefreshToken
	return nil
}

func (w *refreshWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	ts := w.cfg.TokenSource(withClient(ctx, w.client), &oauth2.Token{RefreshToken: w.refresh})
	sw.start()
	tok, err := ts.Token()
	sw.stop()
	if err != nil {
		status, err := tokenError(err)
		// A refused refresh token (used, revoked, expired) is gone for
		// good: the worker needs a new grant. After a 503 or no answer it
		// tries the same one again.
		return status, status >= 400 && status < 500, err
	}
	if tok.RefreshToken == w.refresh {
		return http.StatusOK, true, invalidf("the refresh token was not rotated")
	}
	w.refresh = tok.RefreshToken
	w.r.sawTokens(tok)
	return http.StatusOK, false, nil
}

type loginWorker struct{ r *runner }

func (w *loginWorker) setup(context.Context) error { return nil }

func (w *loginWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	b := w.r.newBrowser() // a new browser each time: no session, so the whole login
	if w.r.o.LoginUsername != nil {
		b.username = w.r.o.LoginUsername()
	}
	sw.start()
	tok, status, err := b.login(ctx)
	sw.stop()
	if err == nil && tok.RefreshToken == "" {
		err = invalidf("the login's token response has no refresh token")
	}
	return status, false, err
}

type sshWorker struct {
	r      *runner
	client *http.Client
	access string
}

func (w *sshWorker) setup(ctx context.Context) error {
	w.client = w.r.httpClient()
	tok, err := w.r.userToken(ctx)
	if err != nil {
		return err
	}
	w.access = tok.AccessToken
	return nil
}

func (w *sshWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return 0, false, err
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		return 0, false, err
	}
	body, _ := json.Marshal(map[string]string{"key": strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.r.endpoint("/ssh"), bytes.NewReader(body))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+w.access)
	sw.start()
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		// 401: the token expired or was revoked; get another.
		return resp.StatusCode, resp.StatusCode == http.StatusUnauthorized, pageError(resp)
	}
	var out struct {
		Certificate string `json:"certificate"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	drain(resp)
	sw.stop()
	if err != nil {
		return resp.StatusCode, false, invalidf("POST /ssh: %v", err)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.Certificate))
	cert, ok := parsed.(*ssh.Certificate)
	if err != nil || !ok || !bytes.Equal(cert.Key.Marshal(), key.Marshal()) {
		return resp.StatusCode, false, invalidf("POST /ssh answered no certificate for the key sent")
	}
	return resp.StatusCode, false, nil
}

type introspectWorker struct {
	r      *runner
	client *http.Client
	token  string
}

func (w *introspectWorker) setup(ctx context.Context) error {
	w.client = w.r.httpClient()
	tok, err := w.r.confidentialClient().Token(withClient(ctx, w.client))
	if err != nil {
		return fmt.Errorf("client_credentials token for %s: %w", w.r.o.ClientID, err)
	}
	w.r.sawTokens(tok)
	w.token = tok.AccessToken
	return nil
}

func (w *introspectWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	form := url.Values{"token": {w.token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.r.endpoint("/oauth2/introspect"), strings.NewReader(form.Encode()))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 §2.3.1: the id and secret are form-encoded inside Basic.
	req.SetBasicAuth(url.QueryEscape(w.r.o.ClientID), url.QueryEscape(w.r.o.ClientSecret))
	sw.start()
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, false, pageError(resp)
	}
	var out struct {
		Active bool `json:"active"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	drain(resp)
	sw.stop()
	switch {
	case err != nil:
		return resp.StatusCode, false, invalidf("POST /oauth2/introspect: %v", err)
	case !out.Active:
		// The token is gone (the store lost or revoked it): get another.
		return resp.StatusCode, true, invalidf("POST /oauth2/introspect: the token is not active")
	}
	return resp.StatusCode, false, nil
}

type membersWorker struct {
	r      *runner
	client *http.Client
	access string
	url    string
}

func (w *membersWorker) setup(ctx context.Context) error {
	w.client = w.r.httpClient()
	w.url = w.r.endpoint("/api/orgs/" + url.PathEscape(w.r.o.Org) + "/members?limit=" + strconv.Itoa(MembersPage))
	tok, err := w.r.userToken(ctx)
	if err != nil {
		return err
	}
	w.r.sawTokens(tok)
	w.access = tok.AccessToken
	return nil
}

func (w *membersWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Authorization", "Bearer "+w.access)
	sw.start()
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		// 401: the token expired or was revoked; get another. A 403 or
		// 404 (not an owner or admin, no such organization) stays.
		return resp.StatusCode, resp.StatusCode == http.StatusUnauthorized, pageError(resp)
	}
	var out struct {
		Members []struct {
			ID string `json:"id"`
		} `json:"members"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&out)
	drain(resp)
	sw.stop()
	switch {
	case err != nil:
		return resp.StatusCode, false, invalidf("GET /api/orgs/%s/members: %v", w.r.o.Org, err)
	case len(out.Members) == 0 || len(out.Members) > MembersPage:
		// The caller is a member: a page is never empty.
		return resp.StatusCode, false, invalidf("GET /api/orgs/%s/members?limit=%d answered %d members", w.r.o.Org, MembersPage, len(out.Members))
	}
	return resp.StatusCode, false, nil
}

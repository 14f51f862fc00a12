package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/oauth2"
)

// browser is what a person's browser does in a login: it keeps cookies,
// follows the server's redirects, fills in the login form, and stops at the
// redirect to the native app's loopback callback without connecting to it.
type browser struct {
	r      *runner
	client *http.Client
	// username is whom the login form is filled in as (Options.Username
	// unless the login scenario chose another).
	username string
}

func (r *runner) newBrowser() *browser {
	jar, _ := cookiejar.New(nil) // never fails without options
	return &browser{r: r, username: r.o.Username, client: &http.Client{
		Transport: r.transport, Timeout: r.timeout, Jar: jar,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != r.base.Host {
				return http.ErrUseLastResponse // the loopback callback: read it, never call it
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}}
}

// publicClient is the native app: public client, PKCE, loopback redirect.
func (r *runner) publicClient() *oauth2.Config {
	return &oauth2.Config{
		ClientID:    r.o.PublicClientID,
		RedirectURL: r.o.RedirectURI,
		Scopes:      []string{"openid", "offline_access"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   r.endpoint("/oauth2/authorize"),
			TokenURL:  r.endpoint("/oauth2/token"),
			AuthStyle: oauth2.AuthStyleInParams, // client_id in the body; no auto-detection retries
		},
	}
}

func (r *runner) endpoint(path string) string { return r.base.String() + path }

// withClient makes x/oauth2 send its requests through c.
func withClient(ctx context.Context, c *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c)
}

// login runs the authorization-code flow with PKCE: the authorization
// request, the login form if the browser has no session (posted with the
// CSRF token from the page and its cookie), the code from the redirect to
// the loopback callback, and the code exchange. status is the failing
// step's, or the token endpoint's on success.
func (b *browser) login(ctx context.Context) (*oauth2.Token, int, error) {
	cfg := b.r.publicClient()
	verifier := oauth2.GenerateVerifier()
	state := oauth2.GenerateVerifier()[:24]
	resp, err := b.get(ctx, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		return nil, 0, err
	}
	posted := false
	for {
		if loc := callback(resp); loc != nil {
			drain(resp)
			q := loc.Query()
			if e := q.Get("error"); e != "" {
				return nil, resp.StatusCode, invalidf("error redirect: %s: %s", e, q.Get("error_description"))
			}
			if q.Get("state") != state || q.Get("code") == "" {
				return nil, resp.StatusCode, invalidf("redirect to the callback without the code or with another state: %s", loc.Redacted())
			}
			tok, err := cfg.Exchange(withClient(ctx, b.client), q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				status, err := tokenError(err)
				return nil, status, err
			}
			b.r.sawTokens(tok)
			return tok, http.StatusOK, nil
		}
		if resp.StatusCode != http.StatusOK {
			return nil, resp.StatusCode, pageError(resp)
		}
		if posted {
			drain(resp)
			return nil, resp.StatusCode, invalidf("the login form came back after posting it")
		}
		action, fields, err := loginForm(resp)
		if err != nil {
			return nil, resp.StatusCode, err
		}
		fields.Set("username", b.username)
		fields.Set("password", b.r.o.Password)
		target, err := resp.Request.URL.Parse(action)
		if err != nil {
			return nil, resp.StatusCode, invalidf("login form action %q: %v", action, err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(fields.Encode()))
		if err != nil {
			return nil, 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, err = b.client.Do(req); err != nil {
			return nil, 0, err
		}
		posted = true
	}
}

func (b *browser) get(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return b.client.Do(req)
}

// callback is the loopback redirect a response makes, or nil.
func callback(resp *http.Response) *url.URL {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	loc, err := resp.Location()
	if err != nil {
		return nil
	}
	return loc
}

// loginForm reads the form with a password field: where it posts and its
// hidden fields (the CSRF token, the pending authorization).
func loginForm(resp *http.Response) (action string, hidden url.Values, err error) {
	defer drain(resp)
	z := html.NewTokenizer(io.LimitReader(resp.Body, 1<<20))
	var inForm, hasPassword bool
	for {
		switch z.Next() {
		case html.ErrorToken:
			return "", nil, invalidf("no login form on %s", resp.Request.URL.Path)
		case html.StartTagToken, html.SelfClosingTagToken:
			t := z.Token()
			switch t.Data {
			case "form":
				inForm, hasPassword, action, hidden = true, false, attr(t, "action"), url.Values{}
			case "input":
				if !inForm {
					continue
				}
				switch attr(t, "type") {
				case "hidden":
					hidden.Add(attr(t, "name"), attr(t, "value"))
				case "password":
					hasPassword = true
				}
			}
		case html.EndTagToken:
			if t := z.Token(); t.Data == "form" {
				if inForm && hasPassword {
					if hidden.Get("csrf_token") == "" {
						return "", nil, invalidf("the login form has no CSRF token")
					}
					return action, hidden, nil
				}
				inForm = false
			}
		}
	}
}

func attr(t html.Token, name string) string {
	for _, a := range t.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

// pageError describes a failed page or JSON answer by its first words.
func pageError(resp *http.Response) error {
	defer drain(resp)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	text := string(body)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		text = visibleText(text)
	}
	return fmt.Errorf("%s %s: %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, shorten(text, 200))
}

// visibleText is a page's error paragraph if it has one, else its text.
func visibleText(page string) string {
	z := html.NewTokenizer(strings.NewReader(page))
	var all, alert strings.Builder
	inAlert, skip := false, false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if alert.Len() > 0 {
				return strings.Join(strings.Fields(alert.String()), " ")
			}
			return strings.Join(strings.Fields(all.String()), " ")
		case html.StartTagToken:
			t := z.Token()
			skip = t.Data == "style" || t.Data == "script" || t.Data == "title"
			if attr(t, "role") == "alert" {
				inAlert = true
			}
		case html.EndTagToken:
			skip, inAlert = false, inAlert && z.Token().Data != "p"
		case html.TextToken:
			if text := z.Text(); !skip { // Text may be read once
				all.Write(text)
				all.WriteByte(' ')
				if inAlert {
					alert.Write(text)
				}
			}
		}
	}
}

func shorten(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// drain reads what is left of a body so its connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// tokenError sorts a failed x/oauth2 token request: an error answer (its
// status), no answer (status 0), or a 2xx it could not use (invalid).
func tokenError(err error) (int, error) {
	var re *oauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re) && re.Response != nil:
		return re.Response.StatusCode, err
	case errors.As(err, &ue):
		return 0, err
	}
	return http.StatusOK, invalidf("%v", err)
}

package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/tokens"
)

// browserLogin is one authorization-code login through the person's
// browser, returning to a loopback listener (RFC 8252) with PKCE.
type browserLogin struct {
	srv *server
	app *App
	req tokens.Requirements
	// org is the organization whose requirement the login meets; the
	// server names it on its pages.
	org       string
	noBrowser bool
	// port is the loopback port to come back to; 0 picks a free one.
	port    int
	timeout time.Duration
	open    func(ctx context.Context, url string) error
	out     io.Writer
}

// refusedError is the server's error redirect, e.g. a person who denied
// access or could not complete a factor.
type refusedError struct{ code, desc string }

func (e *refusedError) Error() string {
	if e.desc == "" {
		return "the login was refused: " + e.code
	}
	return fmt.Sprintf("the login was refused: %s: %s", e.code, e.desc)
}

type callbackResult struct {
	code string
	err  error
}

func (b *browserLogin) run(ctx context.Context) (*oauth2.Token, error) {
	ln, err := listenLoopback(b.port)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	redirect := "http://" + ln.Addr().String() + "/callback"
	cfg := b.app.oauthConfig(b.srv, redirect)
	verifier := oauth2.GenerateVerifier()
	state := randomString()

	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if len(b.req.AMR) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("amr", strings.Join(b.req.AMR, " ")))
	}
	if b.req.MaxAge != nil {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(*b.req.MaxAge, 10)))
	}
	if b.org != "" {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", "urn:stepup:org:"+b.org))
	}
	authURL := cfg.AuthCodeURL(state, opts...)

	results := make(chan callbackResult, 1)
	hs := &http.Server{
		Handler:           b.callback(state, results),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go hs.Serve(ln)
	// The page that says "You are logged in" is still being written when
	// the code arrives here: let it finish, briefly, rather than cut the
	// browser off.
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
	}()

	// The URL is printed even when a browser is opened: on a machine
	// without a display the opener may fail without anyone seeing why,
	// and the person can still copy the URL.
	var opened chan error
	if b.noBrowser {
		fmt.Fprintln(b.out, "Open this URL in a browser to log in:")
	} else {
		fmt.Fprintln(b.out, "Opening a browser to log in. If none opens, open this URL:")
		// The opener runs beside the wait: the desktop's may take as long
		// as the browser it starts, and the callback may come first.
		opened = make(chan error, 1)
		go func() { opened <- b.open(ctx, authURL) }()
	}
	fmt.Fprintln(b.out, authURL)
	fmt.Fprintf(b.out, "Waiting for the browser login (up to %s, Ctrl-C to cancel)…\n", b.timeout.Round(time.Second))

	timer := time.NewTimer(b.timeout)
	defer timer.Stop()
	var res callbackResult
wait:
	for {
		select {
		case err := <-opened:
			if err != nil {
				fmt.Fprintf(b.out, "Could not open a browser: %v. Open the URL above in a browser yourself; still waiting.\n", err)
			}
			// A nil channel is never ready: the opener has had its say.
			opened = nil
		case res = <-results:
			break wait
		case <-timer.C:
			return nil, fmt.Errorf("the browser did not come back within %s; run stepup login again (or use --no-browser and open the URL yourself)", b.timeout.Round(time.Second))
		case <-ctx.Done():
			return nil, fmt.Errorf("login cancelled: %w", ctx.Err())
		}
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := cfg.Exchange(b.app.oauthContext(ctx), res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, b.app.httpError(b.srv, err)
	}
	return tok, nil
}

// listenLoopback opens the listener the browser comes back to. Only a
// port the person chose can be taken, so only then is there something
// they can do about it.
func listenLoopback(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	switch {
	case err == nil:
		return ln, nil
	case port != 0 && errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("Port %d on 127.0.0.1 is in use by another program. Close it or choose another with --port (or login_port in config.json), or leave both out to pick a free one.", port)
	case port != 0:
		return nil, fmt.Errorf("cannot listen on 127.0.0.1 port %d for the browser to come back: %w; choose another with --port (or login_port in config.json), or leave both out to pick a free one", port, err)
	}
	return nil, fmt.Errorf("cannot listen on 127.0.0.1 for the browser to come back: %w", err)
}

// callback answers the browser's return. Only the first answer with the
// right state counts; a stray request (a favicon, a stale tab) is told
// off without ending the wait.
func (b *browserLogin) callback(state string, results chan<- callbackResult) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		if q.Get("state") != state {
			writePage(w, http.StatusBadRequest, "Login not accepted", "This login link is stale or was not started by this stepup command. Return to the terminal and try again.")
			return
		}
		var res callbackResult
		switch iss := q.Get("iss"); {
		case iss == "" && b.srv.IssParameterSupported:
			res.err = errors.New("the authorization response has no iss; refusing it (RFC 9207)")
		case iss != "" && iss != b.srv.Issuer:
			res.err = fmt.Errorf("the authorization response comes from %q, not from %q; refusing it (RFC 9207)", iss, b.srv.Issuer)
		case q.Get("error") != "":
			res.err = &refusedError{code: q.Get("error"), desc: q.Get("error_description")}
		case q.Get("code") == "":
			res.err = errors.New("the authorization response has no code")
		default:
			res.code = q.Get("code")
		}
		select {
		case results <- res:
		default:
			writePage(w, http.StatusConflict, "Already answered", "This login has already been answered. Return to the terminal.")
			return
		}
		if res.err != nil {
			writePage(w, http.StatusOK, "Login failed", "The login did not succeed: "+res.err.Error()+". Please return to the terminal.")
			return
		}
		writePage(w, http.StatusOK, "You are logged in", "You can close this tab and return to the terminal.")
	})
}

// callbackPage is what the browser shows at the end of a CLI login: a
// page of its own (the server's stylesheet is another origin), in the
// console's look.
var callbackPage = template.Must(template.New("callback").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · Stepup CLI</title><link rel="icon" href="data:,">
<style>
:root { color-scheme: light dark; font-family: system-ui, sans-serif; --bg: #f6f7f9; --card: #fff; --fg: #1c1e21; --line: #d9dce1; }
@media (prefers-color-scheme: dark) { :root { --bg: #15171a; --card: #1f2226; --fg: #e7e9ec; --line: #3a3f46; } }
body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: var(--bg); color: var(--fg); }
main { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1.5rem 2rem; max-width: 28rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
</style></head>
<body><main><h1>{{.Title}}</h1><p>{{.Message}}</p></main></body></html>
`))

func writePage(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = callbackPage.Execute(w, struct{ Title, Message string }{title, msg})
}

func randomString() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// openBrowser hands the URL to the desktop and returns once the opener
// has exited, with why it failed if it did: xdg-open without a display
// starts fine and then exits non-zero, which a bare Start would not see.
// The failure is not fatal because the URL is printed too.
func openBrowser(ctx context.Context, url string) error {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	// The opener's own complaint explains a failure. A browser it starts
	// inherits the stream: its chatter is not the person's business, so
	// only the first part is kept, and as it may hold the stream open
	// until it quits, the wait ends soon after the opener's exit.
	var stderr limitedBuffer
	cmd := exec.CommandContext(ctx, name, url)
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		return nil
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s is not installed", name)
	}
	if err != nil {
		// xdg-open repeats the URL, which is already on the screen.
		if msg := strings.ReplaceAll(firstLine(stderr.String()), url, "the URL"); msg != "" {
			return fmt.Errorf("%s: %v (%s)", name, err, msg)
		}
		return fmt.Errorf("%s: %v", name, err)
	}
	return nil
}

// limitedBuffer keeps the first 4 KiB written to it and drops the rest
// without failing the writer.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boombuler/barcode/qr"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
	"golang.org/x/term"

	"github.com/stepup-dev/stepup/tokens"
)

// Device login (RFC 8628) is for a machine without a browser: the CLI
// shows a short code and a URL, the person opens the URL on any device
// where they can sign in (a phone, a laptop), enters the code and allows
// it, and the CLI's polling gets the tokens of that browser session.

// deviceGrantType names the grant, in requests and in the access token's
// grant claim, which is how the CLI knows a session began on this grant.
const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// optionalBool is a boolean flag that also knows whether it was given:
// without --device, a login follows the way the current session logged in.
type optionalBool struct{ set, value bool }

func (b *optionalBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("takes true or false")
	}
	b.set, b.value = true, v
	return nil
}
func (b *optionalBool) String() string   { return strconv.FormatBool(b.value) }
func (b *optionalBool) Type() string     { return "bool" }
func (b *optionalBool) IsBoolFlag() bool { return true }

// deviceFlag gives a command that may log in (a first login or a step-up)
// --device: log in with a code on another device instead of a browser on
// this one. Without it, a login is a device login when the current session
// is one, so that step-ups on a headless machine keep working.
func deviceFlag(cmd *cobra.Command, g *globals) {
	cmd.Flags().Var(&g.device, "device", "log in with a code entered on another device (for machines without a browser)")
	cmd.Flags().Lookup("device").NoOptDefVal = "true"
}

// useDevice says whether this login is a device login: as --device says,
// else not with --no-browser (which asks for the browser flow's URL), else
// as the current session began.
func (a *App) useDevice(srv *server, o loginOptions) bool {
	switch {
	case o.device.set:
		return o.device.value
	case o.noBrowser:
		return false
	}
	s, err := a.session()
	if err != nil {
		return false
	}
	t, err := s.load()
	if err != nil || t == nil || t.Issuer != srv.Issuer {
		return false
	}
	c, err := t.claims()
	return err == nil && c.Grant == deviceGrantType
}

// deviceEndpoint reads the device authorization endpoint from the
// server's discovery document.
func (a *App) deviceEndpoint(ctx context.Context, srv *server) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/.well-known/openid-configuration", nil)
	if err != nil {
		return "", err
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return "", &unreachableError{url: srv.URL, err: err}
	}
	defer resp.Body.Close()
	var doc struct {
		Endpoint string `json:"device_authorization_endpoint"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc) != nil {
		return "", &unreachableError{url: srv.URL, err: fmt.Errorf("discovery answered %s", resp.Status)}
	}
	if doc.Endpoint == "" {
		return "", fmt.Errorf("the server at %s does not offer device login (its discovery names no device_authorization_endpoint); log in through a browser instead (stepup login, or with --no-browser to open the URL elsewhere)", srv.URL)
	}
	return doc.Endpoint, nil
}

// loginParams are what a login asks of the server beyond the client's
// own: the methods and freshness demanded, and the organization whose
// requirement the login meets.
func loginParams(req tokens.Requirements, org string) []oauth2.AuthCodeOption {
	var opts []oauth2.AuthCodeOption
	if len(req.AMR) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("amr", strings.Join(req.AMR, " ")))
	}
	if req.MaxAge != nil {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(*req.MaxAge, 10)))
	}
	if org != "" {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", "urn:stepup:org:"+org))
	}
	return opts
}

// deviceLogin runs one device login and returns its tokens.
func (a *App) deviceLogin(ctx context.Context, srv *server, o loginOptions) (*oauth2.Token, error) {
	endpoint, err := a.deviceEndpoint(ctx, srv)
	if err != nil {
		return nil, err
	}
	cfg := a.oauthConfig(srv, "")
	cfg.Endpoint.DeviceAuthURL = endpoint
	da, err := cfg.DeviceAuth(a.oauthContext(ctx), loginParams(o.req, o.org)...)
	if err != nil {
		return nil, fmt.Errorf("cannot start a device login: %w", a.httpError(srv, err))
	}
	out := a.Stderr
	fmt.Fprintln(out, "To log in, open this URL in a browser on any device:")
	fmt.Fprintln(out, da.VerificationURI)
	fmt.Fprintf(out, "and enter the code %s\n", da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintln(out, "Or open this URL, which carries the code:")
		fmt.Fprintln(out, da.VerificationURIComplete)
		if width, ok := terminalWidth(out); ok {
			if code, err := qrLines(da.VerificationURIComplete); err == nil && qrWidth(code) <= width {
				fmt.Fprintln(out, "or scan it:")
				fmt.Fprint(out, code)
			}
		}
	}
	lifetime := "until the code expires"
	if !da.Expiry.IsZero() {
		lifetime = "the code expires in " + tokens.HumanDuration(time.Until(da.Expiry).Round(time.Minute))
	}
	fmt.Fprintf(out, "Waiting for the login to be allowed (%s; Ctrl-C to cancel)…\n", lifetime)

	tok, err := cfg.DeviceAccessToken(a.oauthContext(ctx), da)
	if err == nil {
		return tok, nil
	}
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "access_denied":
		return nil, errors.New("the device login was denied in the browser; if that was a mistake, run stepup login --device again")
	case errors.As(err, &re) && re.ErrorCode == "expired_token",
		errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, fmt.Errorf("the code %s expired before the login was allowed; run stepup login --device again for a new one", da.UserCode)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("login cancelled: %w", ctx.Err())
	}
	return nil, a.httpError(srv, err)
}

// terminalWidth is the width of the terminal w writes to, if it is one.
func terminalWidth(w io.Writer) (int, bool) {
	c, ok := w.(syscall.Conn)
	if !ok || !isTerminal(w) {
		return 0, false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	width := 0
	if rc.Control(func(fd uintptr) { width, _, err = term.GetSize(int(fd)) }) != nil || err != nil {
		return 0, false
	}
	return width, width > 0
}

// qrQuiet is the light margin around the code, in modules, that scanners
// need to find it.
const qrQuiet = 2

// qrLines draws content as a QR code in text: each character is two
// modules, one above the other, in black on white whatever the
// terminal's colours.
func qrLines(content string) (string, error) {
	code, err := qr.Encode(content, qr.M, qr.Auto)
	if err != nil {
		return "", err
	}
	n := code.Bounds().Dx()
	dark := func(x, y int) bool {
		if x < 0 || y < 0 || x >= n || y >= n {
			return false
		}
		r, g, b, _ := code.At(x, y).RGBA()
		return color.GrayModel.Convert(color.RGBA64{uint16(r), uint16(g), uint16(b), 0xffff}).(color.Gray).Y < 128
	}
	var sb strings.Builder
	for y := -qrQuiet; y < n+qrQuiet; y += 2 {
		sb.WriteString("\x1b[30;107m")
		for x := -qrQuiet; x < n+qrQuiet; x++ {
			switch top, bottom := dark(x, y), dark(x, y+1); {
			case top && bottom:
				sb.WriteString("█")
			case top:
				sb.WriteString("▀")
			case bottom:
				sb.WriteString("▄")
			default:
				sb.WriteString(" ")
			}
		}
		sb.WriteString("\x1b[0m\n")
	}
	return sb.String(), nil
}

// qrWidth is how many columns qrLines' drawing takes.
func qrWidth(drawing string) int {
	first, _, _ := strings.Cut(drawing, "\n")
	first = strings.TrimPrefix(strings.TrimSuffix(first, "\x1b[0m"), "\x1b[30;107m")
	return len([]rune(first))
}

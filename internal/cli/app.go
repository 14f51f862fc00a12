// Package cli is the stepup command: it logs a person in through the
// browser, keeps their tokens and SSH certificate fresh, and answers the
// step-up challenges of resource servers by logging in again with what
// they demand. It talks to the server over HTTP only.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Exit codes. ExitStepUp tells scripts that a person has to log in again
// with more factors, which they cannot do without a terminal.
const (
	ExitOK     = 0
	ExitError  = 1
	ExitStepUp = 3
)

// App holds what the commands take from their surroundings, so tests can
// run them in-process against a real server.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// OpenURL shows the authorize URL to the person; nil means the
	// system browser.
	OpenURL func(ctx context.Context, url string) error
	// Interactive reports whether a person can answer a browser login;
	// nil means "Stdin and Stderr are both terminals".
	Interactive func() bool
	HTTP        *http.Client
	Now         func() time.Time
}

// New returns an App wired to the process.
func New() *App {
	return &App{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Getenv: os.Getenv,
		HTTP:   &http.Client{Timeout: 30 * time.Second},
		Now:    time.Now,
	}
}

func (a *App) defaults() {
	if a.Stdin == nil {
		a.Stdin = os.Stdin
	}
	if a.Stdout == nil {
		a.Stdout = io.Discard
	}
	if a.Stderr == nil {
		a.Stderr = io.Discard
	}
	if a.Getenv == nil {
		a.Getenv = os.Getenv
	}
	if a.HTTP == nil {
		a.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.OpenURL == nil {
		a.OpenURL = openBrowser
	}
	if a.Interactive == nil {
		a.Interactive = func() bool { return personAt(a.Stdin, a.Stderr) }
	}
}

// personAt reports whether a person is at the terminal: standard input
// is one, so somebody is there to answer (cron, CI and `</dev/null` are
// not), and standard error is one, so they see the login URL and what the
// CLI waits for. A character device is not enough: /dev/null is one.
func personAt(stdin io.Reader, stderr io.Writer) bool {
	return isTerminal(stdin) && isTerminal(stderr)
}

// isTerminal asks through SyscallConn rather than Fd, which would put a
// non-blocking descriptor (shared with the shell) into blocking mode.
func isTerminal(v any) bool {
	c, ok := v.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	is := false
	if rc.Control(func(fd uintptr) { is = term.IsTerminal(int(fd)) }) != nil {
		return false
	}
	return is
}

// exitError carries an exit code other than 1, and may be silent when the
// command already said what there was to say.
type exitError struct {
	code   int
	err    error
	silent bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Run runs one command line and returns the process's exit code.
func (a *App) Run(ctx context.Context, args []string) int {
	a.defaults()
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.silent {
			fmt.Fprintln(a.Stderr, "Error:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(a.Stderr, "Error:", err)
	return ExitError
}

// globals are the flags every command shares.
type globals struct {
	url           string
	noInteraction bool
	// noBrowser is --no-browser, which every command that may log in
	// takes (noBrowserFlag): its logins, step-ups included, print the URL
	// instead of opening a browser.
	noBrowser bool
	// device is --device (deviceFlag), for the same commands.
	device optionalBool
	// srv is the server as discovered once for this invocation
	// (discovered), for commands that make several calls.
	srv *server
}

// discovered is discover, once per invocation.
func (a *App) discovered(ctx context.Context, g *globals) (*server, error) {
	if g.srv == nil {
		srv, err := a.discover(ctx, g)
		if err != nil {
			return nil, err
		}
		g.srv = srv
	}
	return g.srv, nil
}

func (a *App) rootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "stepup",
		Short: "Log in to Stepup and use its tokens and SSH certificates",
		Example: `  stepup login
  stepup login --method mfa
  stepup ssh abcdefg123456-main-bvxea6i--app whoami`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.url, "url", "", "Stepup server URL (default: $STEPUP_URL, then the config file)")
	root.PersistentFlags().BoolVar(&g.noInteraction, "no-interaction", false, "never open a browser; print what to run instead")
	root.AddCommand(
		a.loginCmd(g), a.logoutCmd(g),
		a.authTokenCmd(g), a.authInfoCmd(g),
		a.certLoadCmd(g), a.certInfoCmd(g),
		a.apiCmd(g), a.sshCmd(g),
		a.orgCreateCmd(g), a.orgSecurityCmd(g), a.orgUsersCmd(g), a.orgRemindCmd(g),
		a.orgMembersCmd(g), a.orgRoleCmd(g), a.orgRemoveCmd(g), a.orgLeaveCmd(g),
		a.orgInviteCmd(g), a.invitationsCmd(g), a.invitationsResendCmd(g), a.invitationsRevokeCmd(g),
	)
	root.AddCommand(a.adminUsersCmd(g), a.adminDisableCmd(g), a.adminEnableCmd(g))
	return root
}

// noBrowserFlag gives a command that may log in (a first login or a
// step-up) the --no-browser of stepup login, with the same meaning. It is
// not a global flag, so that commands that never log in don't offer it.
func noBrowserFlag(cmd *cobra.Command, g *globals) {
	cmd.Flags().BoolVar(&g.noBrowser, "no-browser", false, "print the login URL instead of opening a browser")
}

// interactive reports whether this invocation may send the person to the
// browser.
func (a *App) interactive(g *globals) bool {
	return !g.noInteraction && a.Interactive()
}

// Command stepup is the command-line client of a Stepup server: browser
// login, tokens, SSH certificates and step-up.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/stepup-dev/stepup/internal/cli"
)

func main() {
	// Ctrl-C cancels the context instead of killing the process, so a
	// waiting login can close its listener and say why it stopped.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.New().Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

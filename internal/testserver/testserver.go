// Package testserver runs a real Stepup authorization server in process on
// a loopback port, for the tests of the programs that talk to one: the CLI,
// the gateway and the load driver.
package testserver

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

// Secret is the sealing secret a server gets when its config has none.
const Secret = "test-secret-0123456789abcdef"

// Start serves cfg over HTTP until the test ends and returns its issuer URL,
// which it sets in cfg: a server must know its own URL before it starts,
// and the port is known only once the listener exists. A config without a
// Store gets a fresh memory store, one without a Secret gets Secret.
func Start(t testing.TB, cfg authz.Config) string {
	return StartAs(t, "127.0.0.1", cfg)
}

// StartAs is Start with an issuer that names host (such as localhost)
// instead of 127.0.0.1. Browsers keep cookies per host, not per port, so a
// second server on 127.0.0.1 would read and overwrite the first one's.
func StartAs(t testing.TB, host string, cfg authz.Config) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	cfg.Issuer = "http://" + strings.Replace(ts.Listener.Addr().String(), "127.0.0.1", host, 1)
	if cfg.Store == nil {
		cfg.Store = memory.New(memory.Config{})
	}
	if cfg.Secret == "" {
		cfg.Secret = Secret
	}
	srv, err := authz.New(cfg)
	if err != nil {
		ts.Listener.Close()
		t.Fatal(err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	return cfg.Issuer
}

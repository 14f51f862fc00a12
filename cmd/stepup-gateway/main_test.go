package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/gateway"
)

func TestLimitFlags(t *testing.T) {
	var stderr strings.Builder
	o, err := parseFlags(nil, &stderr)
	if err != nil || o.handshakeTimeout != gateway.DefaultHandshakeTimeout || o.maxPreAuth != gateway.DefaultMaxPreAuthPerSource {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"--handshake-timeout", "3s", "--max-preauth-per-source", "256"}, &stderr)
	if err != nil || o.handshakeTimeout != 3*time.Second || o.maxPreAuth != 256 {
		t.Fatalf("set: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"--handshake-timeout", "0s"},
		{"--handshake-timeout", "-1s"},
		{"--max-preauth-per-source", "0"},
		{"--max-preauth-per-source", "-3"},
	} {
		stderr.Reset()
		if _, err := parseFlags(args, &stderr); !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), "must be positive") {
			t.Errorf("%q: %v, %q", args, err, stderr.String())
		}
	}
}

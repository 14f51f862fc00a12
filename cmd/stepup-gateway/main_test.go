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
	if err != nil || o.handshakeTimeout != gateway.DefaultHandshakeTimeout || o.maxPreAuthPerSrc != gateway.DefaultMaxPreAuthPerSource ||
		o.maxPreAuth != gateway.DefaultMaxPreAuth {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"--handshake-timeout", "3s", "--max-preauth-per-source", "256", "--max-preauth", "200"}, &stderr)
	if err != nil || o.handshakeTimeout != 3*time.Second || o.maxPreAuthPerSrc != 256 || o.maxPreAuth != 200 {
		t.Fatalf("set: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"--handshake-timeout", "0s"},
		{"--handshake-timeout", "-1s"},
		{"--max-preauth-per-source", "0"},
		{"--max-preauth-per-source", "-3"},
		{"--max-preauth", "0"},
		{"--max-preauth", "-1"},
	} {
		stderr.Reset()
		if _, err := parseFlags(args, &stderr); !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), "must be positive") {
			t.Errorf("%q: %v, %q", args, err, stderr.String())
		}
	}
	stderr.Reset()
	if _, err := parseFlags([]string{"--max-preauth", "257"}, &stderr); !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), "at most 256") {
		t.Errorf("--max-preauth 257: %v, %q", err, stderr.String())
	}
}

func TestRevocationFlags(t *testing.T) {
	var stderr strings.Builder
	o, err := parseFlags(nil, &stderr)
	if err != nil || o.revocationRefresh != 5*time.Second || o.revocationMaxAge != 30*time.Second {
		t.Fatalf("defaults: refresh %v, max age %v, %v", o.revocationRefresh, o.revocationMaxAge, err)
	}
	if o, err := parseFlags([]string{"--revocation-refresh", "1s", "--revocation-max-age", "2s"}, &stderr); err != nil || o.revocationRefresh != time.Second || o.revocationMaxAge != 2*time.Second {
		t.Fatalf("set: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"--revocation-refresh", "0s"},
		{"--revocation-refresh", "20s"}, // max age 30 s < 40 s
		{"--revocation-max-age", "1s"},
	} {
		stderr.Reset()
		if _, err := parseFlags(args, &stderr); !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), "--revocation-max-age at least twice") {
			t.Errorf("%q: %v, %q", args, err, stderr.String())
		}
	}
}

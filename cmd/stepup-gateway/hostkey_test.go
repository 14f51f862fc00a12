package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestEnsureHostKeyKeepsOneKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, path, created, err := ensureHostKey(dir)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	for name, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %04o", name, err, want)
		}
	}
	again, _, created, err := ensureHostKey(dir)
	if err != nil || created || !bytes.Equal(again.PublicKey().Marshal(), first.PublicKey().Marshal()) {
		t.Fatalf("second start: created %v, %v, same key %v", created, err, err == nil && bytes.Equal(again.PublicKey().Marshal(), first.PublicKey().Marshal()))
	}
	// readHostKey, as --host-key does, reads the same key: the file is an
	// ordinary OpenSSH private key.
	if k, err := readHostKey(path); err != nil || !bytes.Equal(k.PublicKey().Marshal(), first.PublicKey().Marshal()) {
		t.Errorf("readHostKey: %v", err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ensureHostKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a key others can read: %v", err)
	}
}

// Gateways starting at once on one state directory agree on one key.
func TestEnsureHostKeyConcurrentStarts(t *testing.T) {
	dir := t.TempDir()
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, _, _, err := ensureHostKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k.PublicKey().Marshal()
		})
	}
	wg.Wait()
	for i := range keys {
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("start %d got another key", i)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestDefaultStateDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"STATE_DIRECTORY": "/var/lib/stepup-gateway", "XDG_STATE_HOME": "/x", "HOME": "/h"}, "/var/lib/stepup-gateway"},
		{map[string]string{"XDG_STATE_HOME": "/x", "HOME": "/h"}, "/x/stepup-gateway"},
		{map[string]string{"HOME": "/h"}, "/h/.local/state/stepup-gateway"},
	} {
		if got, err := defaultStateDir(env(c.env)); err != nil || got != c.want {
			t.Errorf("%v: %q, %v; want %q", c.env, got, err, c.want)
		}
	}
	if _, err := defaultStateDir(env(nil)); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Errorf("no directory at all: %v", err)
	}
}

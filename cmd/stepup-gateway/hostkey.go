package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// stateHostKeyFile is the host key's name in the state directory, as
// sshd names its own.
const stateHostKeyFile = "ssh_host_ed25519_key"

// defaultStateDir is where the gateway keeps what must survive a restart:
// systemd's StateDirectory= first, then the XDG base directories.
func defaultStateDir(getenv func(string) string) (string, error) {
	if d := getenv("STATE_DIRECTORY"); d != "" {
		return d, nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "stepup-gateway"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("no state directory: give --state-dir DIR (or --host-key FILE), or set STATE_DIRECTORY, XDG_STATE_HOME or HOME")
	}
	return filepath.Join(home, ".local", "state", "stepup-gateway"), nil
}

// ensureHostKey returns the host key kept in dir, creating it on the
// first start. People's ssh pins a gateway's host key, so a new key at
// every start would make their ssh refuse the gateway, or teach them to
// turn the check off.
func ensureHostKey(dir string) (key ssh.Signer, path string, created bool, err error) {
	path = filepath.Join(dir, stateHostKeyFile)
	key, err = readStateHostKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, path, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, path, false, fmt.Errorf("host key: %w (give --state-dir DIR or --host-key FILE)", err)
	}
	key, err = createHostKey(path)
	if errors.Is(err, os.ErrExist) {
		// Another gateway sharing the directory made one first.
		key, err = readStateHostKey(path)
		return key, path, false, err
	}
	return key, path, err == nil, err
}

// readStateHostKey refuses a key others can read, as sshd does: whoever
// reads it can pose as the gateway.
func readStateHostKey(path string) (ssh.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("host key %s is open to other users (mode %04o); chmod 600 it", path, perm)
	}
	return readHostKey(path)
}

// createHostKey writes a new Ed25519 key to path, 0600 from its first
// byte. It is linked into place rather than renamed, because a link fails
// when path exists: of two gateways starting at once, the second gets
// os.ErrExist and reads the first one's key instead of replacing it.
func createHostKey(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "stepup-gateway host key")
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+stateHostKeyFile+".*")
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(pem.EncodeToMemory(block))
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return nil, fmt.Errorf("host key: writing %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, err
		}
		return nil, fmt.Errorf("host key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

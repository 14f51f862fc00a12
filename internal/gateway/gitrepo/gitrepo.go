// Package gitrepo serves git over an SSH session: one bare repository per
// service under a root directory, created on the first push, with the real
// git-upload-pack and git-receive-pack doing the work.
package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The two commands git runs on the far side of an SSH connection.
const (
	UploadPack  = "git-upload-pack"  // fetch and clone
	ReceivePack = "git-receive-pack" // push
)

// ExitNoRepository is git's own status for "not a git repository".
const ExitNoRepository = 128

// waitDelay bounds how long a finished git process may keep its output
// open (through a child it left behind) before we stop waiting for it.
const waitDelay = 5 * time.Second

// Repos is the directory of repositories. The zero value is not usable;
// set Root.
type Repos struct {
	// Root holds <service>.git for each service that was pushed to.
	Root string

	// initMu keeps two first pushes from initializing one repository at
	// the same time.
	initMu sync.Mutex
}

// Path is the bare repository of service. The service id must already be
// known to be a safe file name (the gateway's config guarantees it).
func (r *Repos) Path(service string) string {
	return filepath.Join(r.Root, service+".git")
}

// Streams are the session's standard streams.
type Streams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Serve runs verb (UploadPack or ReceivePack) against the service's
// repository and returns its exit status. env adds variables such as
// GIT_PROTOCOL, which selects git's wire protocol version. ctx ends the
// process early. The error is for the log: the person has already been
// told on Stderr.
func (r *Repos) Serve(ctx context.Context, verb, service string, env []string, s Streams) (int, error) {
	if verb != UploadPack && verb != ReceivePack {
		return 1, fmt.Errorf("gitrepo: %q is not a git transport command", verb)
	}
	dir := r.Path(service)
	exists, err := isDir(dir)
	if err != nil {
		fmt.Fprintf(s.Stderr, "fatal: the repository of %s cannot be opened\n", service)
		return ExitNoRepository, fmt.Errorf("gitrepo: %w", err)
	}
	if !exists {
		if verb == UploadPack {
			fmt.Fprintf(s.Stderr, "fatal: %s has no repository yet; push to it first\n", service)
			return ExitNoRepository, nil
		}
		if err := r.create(ctx, dir); err != nil {
			fmt.Fprintf(s.Stderr, "fatal: the repository of %s could not be created\n", service)
			return ExitNoRepository, err
		}
	}
	code, err := run(ctx, verb, dir, env, s)
	if err == nil && verb == ReceivePack {
		if herr := pointHEAD(ctx, dir); herr != nil {
			return code, herr
		}
	}
	return code, err
}

func isDir(path string) (bool, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s is not a directory", path)
	}
	return true, nil
}

func (r *Repos) create(ctx context.Context, dir string) error {
	r.initMu.Lock()
	defer r.initMu.Unlock()
	if err := os.MkdirAll(r.Root, 0o750); err != nil {
		return fmt.Errorf("gitrepo: %w", err)
	}
	// git init refuses nothing and changes nothing in an existing
	// repository, so losing a race to another first push is harmless.
	if out, err := git(ctx, "init", "--quiet", "--bare", dir); err != nil {
		return fmt.Errorf("gitrepo: git init --bare %s: %w: %s", dir, err, out)
	}
	return nil
}

// run starts the git binary with the streams attached and waits for it.
func run(ctx context.Context, verb, dir string, env []string, s Streams) (int, error) {
	name, args := verb, []string{dir}
	if _, err := exec.LookPath(verb); err != nil {
		// Some installations keep the transport commands only under git's
		// exec path; the git front end finds them there.
		name, args = "git", []string{strings.TrimPrefix(verb, "git-"), dir}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	cmd.WaitDelay = waitDelay
	// exec.Cmd would wait for its stdin copier, which only ends when the
	// client closes its side, and git clients do not always do so before
	// they see the exit status. Our own copier ends with the channel.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 1, fmt.Errorf("gitrepo: %w", err)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(s.Stderr, "fatal: %s is not available on this gateway\n", verb)
		return 1, fmt.Errorf("gitrepo: starting %s: %w", verb, err)
	}
	go func() {
		_, _ = io.Copy(stdin, s.Stdin)
		_ = stdin.Close()
	}()
	err = cmd.Wait()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		if code := exit.ExitCode(); code >= 0 {
			return code, nil
		}
		return 1, fmt.Errorf("gitrepo: %s: %w", verb, err)
	}
	if err != nil {
		return 1, fmt.Errorf("gitrepo: %s: %w", verb, err)
	}
	return 0, nil
}

// pointHEAD makes a repository whose HEAD names a branch that does not
// exist point at a branch that does, so that a clone of a repository first
// pushed with another default branch name still checks out files.
func pointHEAD(ctx context.Context, dir string) error {
	if _, err := git(ctx, "--git-dir", dir, "rev-parse", "--quiet", "--verify", "HEAD"); err == nil {
		return nil
	}
	out, err := git(ctx, "--git-dir", dir, "for-each-ref", "--format=%(refname)", "refs/heads/")
	if err != nil {
		return fmt.Errorf("gitrepo: listing branches of %s: %w: %s", dir, err, out)
	}
	branches := strings.Fields(string(out))
	if len(branches) == 0 {
		return nil
	}
	head := branches[0]
	for _, preferred := range []string{"refs/heads/main", "refs/heads/master"} {
		if slices.Contains(branches, preferred) {
			head = preferred
			break
		}
	}
	if out, err := git(ctx, "--git-dir", dir, "symbolic-ref", "HEAD", head); err != nil {
		return fmt.Errorf("gitrepo: pointing HEAD of %s at %s: %w: %s", dir, head, err, out)
	}
	return nil
}

func git(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return bytes.TrimSpace(out.Bytes()), err
}

// cleanEnv is the gateway's environment without GIT_* variables: an
// operator's GIT_DIR or GIT_CONFIG_* must not redirect the repositories we
// serve.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GIT_") })
}

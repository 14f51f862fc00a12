package gitrepo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepup-dev/stepup/internal/testenv"
)

func TestServe(t *testing.T) {
	testenv.Require(t, "git", "git")
	ctx := context.Background()
	r := &Repos{Root: filepath.Join(t.TempDir(), "repos")}
	var out, errOut bytes.Buffer
	streams := Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut}

	code, err := r.Serve(ctx, UploadPack, "app", nil, streams)
	if code != ExitNoRepository || err != nil || errOut.String() != "fatal: app has no repository yet; push to it first\n" {
		t.Fatalf("upload-pack before any push: %d %v %q", code, err, errOut.String())
	}
	if _, err := os.Stat(r.Root); !os.IsNotExist(err) {
		t.Fatalf("a fetch created %s", r.Root)
	}

	// A push creates the repository. A flush packet after the ref
	// advertisement is git's way of pushing nothing.
	errOut.Reset()
	code, err = r.Serve(ctx, ReceivePack, "app", nil, Streams{Stdin: strings.NewReader("0000"), Stdout: &out, Stderr: &errOut})
	if code != 0 || err != nil {
		t.Fatalf("receive-pack: %d %v %s", code, err, errOut.String())
	}
	if !strings.Contains(out.String(), "report-status") {
		t.Errorf("no ref advertisement: %q", out.String())
	}
	if b, err := exec.Command("git", "--git-dir", r.Path("app"), "rev-parse", "--is-bare-repository").Output(); err != nil || strings.TrimSpace(string(b)) != "true" {
		t.Fatalf("not a bare repository: %s %v", b, err)
	}

	if code, err := r.Serve(ctx, "git-upload-archive", "app", nil, streams); code == 0 || err == nil {
		t.Error("another git command was run")
	}
}

func TestPointHEAD(t *testing.T) {
	testenv.Require(t, "git", "git")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "r.git")
	gitOK := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(cleanEnv(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	gitOK("init", "--quiet", "--bare", "--initial-branch=master", dir)
	// An empty repository stays as it is.
	if err := pointHEAD(ctx, dir); err != nil {
		t.Fatal(err)
	}
	tree := gitOK("--git-dir", dir, "mktree")
	commit := gitOK("--git-dir", dir, "commit-tree", "-m", "first", tree)
	gitOK("--git-dir", dir, "update-ref", "refs/heads/trunk", commit)
	if err := pointHEAD(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if got := gitOK("--git-dir", dir, "symbolic-ref", "HEAD"); got != "refs/heads/trunk" {
		t.Errorf("HEAD = %s, want the only branch", got)
	}
	gitOK("--git-dir", dir, "update-ref", "refs/heads/main", commit)
	if err := pointHEAD(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if got := gitOK("--git-dir", dir, "symbolic-ref", "HEAD"); got != "refs/heads/trunk" {
		t.Errorf("HEAD moved from an existing branch to %s", got)
	}
}

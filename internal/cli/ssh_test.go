package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeSSH puts an ssh on PATH that refuses with the gateway's message
// (demanding amr) until it has been run refusals times, then prints its
// arguments. Asked for its configuration (-G), it has none, so the CLI
// pins host keys itself.
func fakeSSH(t *testing.T, amr string, refusals int) (argsFile string) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	argsFile = filepath.Join(dir, "args")
	script := `#!/bin/sh
[ "$1" = -G ] && exit 0
n=$(cat ` + count + ` 2>/dev/null || echo 0)
echo $((n+1)) > ` + count + `
echo "$@" > ` + argsFile + `
if [ "$n" -lt ` + strconv.Itoa(refusals) + ` ]; then
  printf 'Error: Access denied\nService: svc\nUser: alice (u_alice)\nParameters: {"amr":` + amr + `}\nDetail: Additional authentication is required:\n' >&2
  exit 1
fi
echo connected
`
	if err := os.WriteFile(filepath.Join(dir, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return argsFile
}

func TestSSHReissuesCertificateWhenTokenSuffices(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	argsFile := fakeSSH(t, `["pwd"]`, 1)
	r := e.mustRun("ssh", "svc", "whoami", "--host", "gw.example.com", "--port", "2222")
	if !strings.Contains(r.stdout, "connected") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	args, _ := os.ReadFile(argsFile)
	dir := filepath.Join(e.dir, "stepup")
	want := "-i " + dir + "/id_ed25519 -o CertificateFile=" + dir + "/id_ed25519-cert.pub -o IdentitiesOnly=yes" +
		" -o UserKnownHostsFile=" + dir + "/known_hosts -o StrictHostKeyChecking=accept-new -p 2222 svc@gw.example.com whoami"
	if strings.TrimSpace(string(args)) != want {
		t.Errorf("ssh ran with\n%s\nwant\n%s", args, want)
	}
}

func TestSSHStepUpNonInteractive(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	fakeSSH(t, `["mfa"]`, 5)
	r := e.run("ssh", "svc", "--host", "gw.example.com")
	if r.code != ExitStepUp {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"Multi-factor authentication (MFA) is required.", "  stepup login --method mfa\n"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

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
// arguments. Asked for its configuration (-G), it prints the file
// settingsFile(argsFile), none unless a test writes one, so the CLI pins
// host keys itself.
func fakeSSH(t *testing.T, amr string, refusals int) (argsFile string) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	argsFile = filepath.Join(dir, "args")
	script := `#!/bin/sh
[ "$1" = -G ] && { cat ` + settingsFile(argsFile) + ` 2>/dev/null; exit 0; }
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

// settingsFile is what fakeSSH answers to ssh -G.
func settingsFile(argsFile string) string { return filepath.Join(filepath.Dir(argsFile), "settings") }

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

// TestSSHDefaultsToGatewayPort: without --port or ssh_port, stepup ssh
// goes to stepup-gateway's port, 2222, unless the person's own ssh
// configuration sets a port for the host; ssh_port and --port win.
func TestSSHDefaultsToGatewayPort(t *testing.T) {
	e := newEnv(t)
	e.mustRun("login")
	argsFile := fakeSSH(t, `[]`, 0)
	ranWith := func(args ...string) string {
		t.Helper()
		e.mustRun(append([]string{"ssh", "svc", "--host", "gw.example.com"}, args...)...)
		b, err := os.ReadFile(argsFile)
		if err != nil {
			t.Fatal(err)
		}
		// The destination and what precedes it: the options before are
		// the key, the certificate and the pins.
		f := strings.Fields(string(b))
		if len(f) >= 3 && f[len(f)-3] == "-p" {
			return strings.Join(f[len(f)-3:], " ")
		}
		return f[len(f)-1]
	}
	if got := ranWith(); got != "-p 2222 svc@gw.example.com" {
		t.Errorf("by default: ssh %s, want -p 2222 svc@gw.example.com", got)
	}
	if got := ranWith("--port", "2201"); got != "-p 2201 svc@gw.example.com" {
		t.Errorf("with --port 2201: ssh %s", got)
	}
	e.writeConfig(fileConfig{SSHPort: 2200})
	if got := ranWith(); got != "-p 2200 svc@gw.example.com" {
		t.Errorf("with ssh_port 2200: ssh %s", got)
	}
	if got := ranWith("--port", "2201"); got != "-p 2201 svc@gw.example.com" {
		t.Errorf("with ssh_port 2200 and --port 2201: ssh %s", got)
	}

	// A Host block of the person's sets the port: their ssh applies it.
	e.writeConfig(fileConfig{})
	if err := os.WriteFile(settingsFile(argsFile), []byte("hostname gw.example.com\nport 2022\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := ranWith(); got != "svc@gw.example.com" {
		t.Errorf("with Port 2022 in the person's ssh config: ssh %s, want no -p", got)
	}
	if got := ranWith("--port", "2201"); got != "-p 2201 svc@gw.example.com" {
		t.Errorf("with Port 2022 in the person's ssh config and --port 2201: ssh %s", got)
	}
	if r := e.run("ssh", "svc", "--port", "70000"); r.code != ExitError || !strings.Contains(r.stderr, "--port takes a port number") {
		t.Errorf("--port 70000: exit %d: %s", r.code, r.stderr)
	}
}

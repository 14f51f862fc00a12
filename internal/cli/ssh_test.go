package cli

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testserver"
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

// serverWithServices is newServer's server with services whose gateways
// it names.
func serverWithServices(t *testing.T, services ...authz.Service) string {
	t.Helper()
	return testserver.Start(t, authz.Config{
		Clients: []authz.Client{{
			ID: DefaultClientID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes: []string{"authorization_code", "refresh_token", "api_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none",
		}},
		Users: []authz.User{{ID: "u_alice", Username: "alice", Email: "alice@example.com", Name: "Alice",
			PasswordHash: aliceHash(), EmailVerified: true}},
		Orgs: []authz.Org{{ID: "acme", Name: "ACME", MFARequired: true,
			Members: []authz.Member{{UserID: "u_alice", Role: "owner"}}}},
		Services: services,
	})
}

// sshDestination runs stepup ssh and returns the destination it gave ssh
// (SERVICE@HOST), after "-p PORT" when it passed one.
func sshDestination(t *testing.T, e *cliEnv, argsFile string, args ...string) string {
	t.Helper()
	e.mustRun(args...)
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	i := slices.IndexFunc(f, func(s string) bool { return strings.Contains(s, "@") })
	switch {
	case i < 0:
		t.Fatalf("no destination in ssh %s", b)
	case i >= 2 && f[i-2] == "-p":
		return strings.Join(f[i-2:i+1], " ")
	}
	return f[i]
}

// TestSSHLearnsGatewayAddress: without --host or ssh_host, stepup ssh goes
// where the server says the service's gateway listens; --port and
// ssh_port still choose the port, and --host or ssh_host choose the
// gateway themselves (the server is not asked, and the port defaults as
// before).
func TestSSHLearnsGatewayAddress(t *testing.T) {
	e := &cliEnv{t: t, dir: t.TempDir(), issuer: serverWithServices(t,
		authz.Service{ID: "svc", Org: "acme", SSHAddress: "gw.example.com:2200"},
		authz.Service{ID: "nowhere", Org: "acme"})}
	e.mustRun("login")
	argsFile := fakeSSH(t, `[]`, 0)
	for _, tc := range []struct {
		name   string
		config fileConfig
		args   []string
		want   string
	}{
		{name: "ok/learned", args: []string{"svc"}, want: "-p 2200 svc@gw.example.com"},
		{name: "ok/learned-with-a-command", args: []string{"svc", "whoami"}, want: "-p 2200 svc@gw.example.com"},
		{name: "ok/port-flag-wins", args: []string{"svc", "--port", "2201"}, want: "-p 2201 svc@gw.example.com"},
		{name: "ok/ssh-port-wins", config: fileConfig{SSHPort: 2300}, args: []string{"svc"}, want: "-p 2300 svc@gw.example.com"},
		{name: "ok/host-flag-wins", args: []string{"svc", "--host", "other.example.com"}, want: "-p 2222 svc@other.example.com"},
		{name: "ok/both-flags-win", args: []string{"svc", "--host", "other.example.com", "--port", "2201"}, want: "-p 2201 svc@other.example.com"},
		{name: "ok/ssh-host-wins", config: fileConfig{SSHHost: "cfg.example.com"}, args: []string{"svc"}, want: "-p 2222 svc@cfg.example.com"},
		{name: "ok/host-flag-over-ssh-host", config: fileConfig{SSHHost: "cfg.example.com"}, args: []string{"svc", "--host", "other.example.com"},
			want: "-p 2222 svc@other.example.com"},
		// The server knows no address: today's defaults, the server's host.
		{name: "ok/no-address-configured", args: []string{"nowhere"}, want: "-p 2222 nowhere@127.0.0.1"},
		{name: "ok/unknown-service", args: []string{"nosuch"}, want: "-p 2222 nosuch@127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			e.writeConfig(tc.config)
			if got := sshDestination(t, e, argsFile, append([]string{"ssh"}, tc.args...)...); got != tc.want {
				t.Errorf("stepup ssh %s: ssh %s, want %s", strings.Join(tc.args, " "), got, tc.want)
			}
		})
	}
}

// TestSSHLookupNeverHangs: a server that takes the lookup and never
// answers, and one too old to know it, leave stepup ssh on its defaults,
// the first within the lookup's bound.
func TestSSHLookupNeverHangs(t *testing.T) {
	issuer := serverWithServices(t, authz.Service{ID: "svc", Org: "acme", SSHAddress: "gw.example.com:2200"})
	target, _ := url.Parse(issuer)
	proxy := httputil.NewSingleHostReverseProxy(target)
	for _, tc := range []struct {
		name    string
		lookups http.HandlerFunc
	}{
		{name: "ok/server-hangs", lookups: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "ok/older-server", lookups: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{name: "ok/garbage-answer", lookups: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ssh_address": "-oProxyCommand=evil:22"}`))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/api/services/") {
					tc.lookups(w, r)
					return
				}
				proxy.ServeHTTP(w, r)
			}))
			t.Cleanup(front.Close)
			// The CLI talks to the front; discovery still names the
			// server behind it as the issuer.
			e := &cliEnv{t: t, dir: t.TempDir(), issuer: front.URL}
			e.mustRun("login")
			argsFile := fakeSSH(t, `[]`, 0)
			began := time.Now()
			if got, want := sshDestination(t, e, argsFile, "ssh", "svc"), "-p 2222 svc@127.0.0.1"; got != want {
				t.Errorf("ssh %s, want %s", got, want)
			}
			if took := time.Since(began); took > serviceLookupTimeout+5*time.Second {
				t.Errorf("stepup ssh took %s", took)
			}
		})
	}
}

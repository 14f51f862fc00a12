package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SSHDEnv names an environment variable that, when set, is the path of the
// sshd to run instead of looking one up. A path that does not exist counts
// as sshd missing, which is how the skip-or-fail rule is exercised on a
// machine that has sshd.
const SSHDEnv = "STEPUP_TEST_SSHD"

// sshdPath is where Debian's openssh-server installs sshd; /usr/sbin is not
// on every user's PATH, so it is looked at before PATH is searched.
const sshdPath = "/usr/sbin/sshd"

// sshTimeout bounds one run of the ssh client, connection and command.
const sshTimeout = 20 * time.Second

// RequireSSHD returns the path of sshd (Debian package openssh-server) or
// skips the test, failing it instead under STEPUP_TEST_REQUIRE=all, exactly
// as Require does. It looks at $STEPUP_TEST_SSHD if set, else at
// /usr/sbin/sshd, else on PATH.
func RequireSSHD(t testing.TB) string {
	t.Helper()
	path := os.Getenv(SSHDEnv)
	if path == "" {
		if p, err := exec.LookPath(sshdPath); err == nil {
			path = p
		} else {
			path = "sshd"
		}
	}
	// Require with a name containing a slash checks that very file.
	path = Require(t, path, "openssh-server")
	if path == "" {
		return ""
	}
	// sshd re-executes itself for every connection and insists on an
	// absolute path to do so.
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return abs
}

// sshdLogs maps the address of each running sshd started by StartSSHD to
// the file its standard error (its log, with -e) goes to.
var sshdLogs sync.Map

// SSHDLog returns what the sshd at addr, started by StartSSHD, has logged
// so far ("" for an address StartSSHD did not return, or once its test has
// ended). sshd writes a connection's lines from the connection's own
// processes, so a line about an attempt may arrive shortly after the
// client has exited: poll for the line you expect.
func SSHDLog(addr string) string {
	path, ok := sshdLogs.Load(addr)
	if !ok {
		return ""
	}
	b, err := os.ReadFile(path.(string))
	if err != nil {
		return ""
	}
	return string(b)
}

// StartSSHD starts a private OpenSSH server in the foreground (-D -e) on a
// free loopback port with its own configuration and host key in a temp
// dir, and stops it in t.Cleanup. It accepts only user certificates signed
// by one of trustedCAKeys (authorized_keys-format lines, as GET
// /ssh/authority lists them) and lets the certificate principal "alice"
// log in as the current user: no authorized_keys, passwords or PAM. It
// returns "127.0.0.1:PORT" once the server greets with its SSH banner.
//
// Run as root, sshd needs its privilege separation directory /run/sshd;
// StartSSHD creates it where it is missing.
func StartSSHD(t testing.TB, trustedCAKeys string) (addr string) {
	t.Helper()
	bin := RequireSSHD(t)
	keygen := Require(t, "ssh-keygen", "openssh-client")
	me, err := user.Current()
	if err != nil {
		t.Fatalf("testenv: current user: %v", err)
	}

	dir := t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "stepup-test-sshd", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("testenv: generating the sshd host key: %v\n%s", err, out)
	}
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	if err := os.WriteFile(caFile, []byte(strings.TrimSpace(trustedCAKeys)+"\n"), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	principals := filepath.Join(dir, "principals")
	if err := os.Mkdir(principals, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.WriteFile(filepath.Join(principals, me.Username), []byte("alice\n"), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if os.Geteuid() == 0 {
		// Only a root sshd chroots its pre-authentication child there.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("testenv: creating sshd's privilege separation directory: %v", err)
		}
	}

	addr, logPath := daemon{
		name:     "sshd",
		pickPort: FreePort,
		command: func(port int) *exec.Cmd {
			config := filepath.Join(dir, fmt.Sprintf("sshd_config.%d", port))
			if err := os.WriteFile(config, []byte(sshdConfig(port, hostKey, caFile, principals)), 0o644); err != nil {
				t.Fatalf("testenv: %v", err)
			}
			cmd := exec.Command(bin, "-D", "-e", "-f", config)
			cmd.Dir = dir
			// Its own process group, so that the cleanup also ends
			// connection processes that outlive the listener.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			return cmd
		},
		probe: func(addr string) error {
			banner, err := readBanner(addr)
			if err == nil && !strings.HasPrefix(banner, "SSH-2.0-") {
				err = fmt.Errorf("unexpected greeting %q", banner)
			}
			return err
		},
		kill: func(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) },
	}.start(t)
	sshdLogs.Store(addr, logPath)
	t.Cleanup(func() { sshdLogs.Delete(addr) })
	return addr
}

func sshdConfig(port int, hostKey, caFile, principals string) string {
	return strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"Port " + strconv.Itoa(port),
		"HostKey " + hostKey,
		"PidFile none",
		"TrustedUserCAKeys " + caFile,
		"AuthorizedPrincipalsFile " + principals + "/%u",
		"AuthorizedKeysFile none",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"UsePAM no",
		"StrictModes no",
		"PrintMotd no",
		"LogLevel VERBOSE",
		"",
	}, "\n")
}

func readBanner(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// SSH runs the real ssh client (Debian package openssh-client)
// non-interactively against addr ("127.0.0.1:PORT") as remoteUser, with
// the private key identity and the certificate certFile, and returns what
// the command printed. err is the client's exit error: ssh exits 255 when
// it cannot connect or authenticate, otherwise with the command's status.
// No configuration file, agent or known_hosts file is used, and the run is
// bounded by 20 seconds.
//
// ssh also loads <identity>-cert.pub by itself where that file exists; to
// present only certFile, keep identity in a directory without one.
func SSH(t testing.TB, addr, identity, certFile, remoteUser string, command ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := Require(t, "ssh", "openssh-client")
	host, port, splitErr := net.SplitHostPort(addr)
	if splitErr != nil {
		t.Fatalf("testenv: ssh to %q: %v", addr, splitErr)
	}
	args := []string{
		"-F", "none",
		"-i", identity,
		"-o", "CertificateFile=" + certFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
		"-o", "LogLevel=ERROR",
		"-p", port,
		"--",
		remoteUser + "@" + host,
	}
	args = append(args, command...)
	ctx, cancel := context.WithTimeout(context.Background(), sshTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("ssh %s: no answer within %v: %w", strings.Join(args, " "), sshTimeout, err)
	}
	return out.String(), errOut.String(), err
}

// Package testenv starts the real external programs that some tests need
// (redis-server, a Redis Cluster) on loopback, and decides what happens when
// a program is missing: a developer's run skips, CI's run fails.
package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer. A healthy
// redis-server is up in milliseconds; ten seconds only matters on a machine
// so loaded that the test would be meaningless anyway.
const startTimeout = 10 * time.Second

// Require returns the path of binary name, or skips the test with a loud
// message naming the binary and the Debian package to install — unless the
// environment variable STEPUP_TEST_REQUIRE is "all" (CI sets it), in which
// case it fails the test instead.
func Require(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed (%v); install the Debian package %q: apt-get install %s",
		name, err, debianPackage, debianPackage)
	// CI must never turn green by skipping the tests it exists to run.
	if os.Getenv("STEPUP_TEST_REQUIRE") == "all" {
		t.Fatalf("STEPUP_TEST_REQUIRE=all and %s", msg)
	} else {
		t.Skipf("SKIPPING: %s (set STEPUP_TEST_REQUIRE=all to fail instead)", msg)
	}
	return ""
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartRedis starts a private redis-server on a free loopback port (no
// persistence: --save "" --appendonly no, its own temp dir), waits until it
// answers PING, and stops it in t.Cleanup. Returns "127.0.0.1:PORT".
func StartRedis(t testing.TB) string {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	return startServer(t, bin, FreePort, nil)
}

// StartRedisCluster starts three redis-server nodes with --cluster-enabled
// yes on free loopback ports, joins them with `redis-cli --cluster create
// ... --cluster-replicas 0 --cluster-yes`, waits until CLUSTER INFO says
// cluster_state:ok on every node, and stops them in t.Cleanup. Returns the
// three addresses.
func StartRedisCluster(t testing.TB) []string {
	t.Helper()
	server := Require(t, "redis-server", "redis-server")
	cli := Require(t, "redis-cli", "redis-tools")
	addrs := make([]string, 3)
	for i := range addrs {
		addrs[i] = startServer(t, server, freeClusterPort, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
		})
	}

	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: redis-cli %s: %v\n%s", strings.Join(args, " "), err, tail(out))
	}

	// redis-cli returns once the slots are assigned, but each node declares
	// the cluster ok only after gossip has reached it.
	deadline := time.Now().Add(startTimeout)
	for _, addr := range addrs {
		for {
			info, err := command(addr, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("testenv: cluster node %s not ok after %v: %v\n%s\nredis-cli said:\n%s",
					addr, startTimeout, err, info, tail(out))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return addrs
}

// freeClusterPort finds a port p such that p+10000 is free as well: a
// cluster node listens for its peers there. (--cluster-port would free us
// from the rule, but it needs Redis 7 and CI's Redis may be older.)
func freeClusterPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: finding a free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 <= 65535 {
			if bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000)); err == nil {
				bus.Close()
				l.Close()
				return p
			}
		}
		l.Close()
	}
	t.Fatal("testenv: no free port p with p+10000 free as well")
	return 0
}

// startServer runs redis-server with extra arguments on a port from
// pickPort and waits until it answers PING.
func startServer(t testing.TB, bin string, pickPort func(testing.TB) int, extra []string) string {
	t.Helper()
	addr, _ := daemon{
		name:     "redis-server",
		pickPort: pickPort,
		command: func(port int) *exec.Cmd {
			dir := t.TempDir()
			cmd := exec.Command(bin, append([]string{
				"--port", strconv.Itoa(port),
				"--bind", "127.0.0.1",
				"--save", "",
				"--appendonly", "no",
				"--dir", dir,
			}, extra...)...)
			cmd.Dir = dir
			return cmd
		},
		probe: func(addr string) error {
			reply, err := command(addr, "PING")
			if err == nil && reply != "PONG" {
				err = fmt.Errorf("PING answered %q", reply)
			}
			return err
		},
	}.start(t)
	return addr
}

// command sends one command and returns a simple, integer or bulk-string
// reply as text; enough to ask PING and CLUSTER INFO without a client
// library, which this package would otherwise drag into every test binary.
func command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(req.Bytes()); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func tailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(b)
}

// tail keeps the end of a log, where the reason a server died is.
func tail(b []byte) string {
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

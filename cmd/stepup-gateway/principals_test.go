package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// fakeIssuer is the little of a Stepup server the principals command
// talks to: the SSH authority list, the token endpoint (client
// credentials) and the access API.
type fakeIssuer struct {
	*httptest.Server
	mu              sync.Mutex
	authorities     []string          // GET /ssh/authority
	authorityStatus int               // of GET /ssh/authority; 0 is 200
	answers         map[string]string // "org/user id" → the access answer's JSON
	status          int               // of the access API; 0 is 200
	lookups         atomic.Int32
	authorityCalls  atomic.Int32
	revoked         []uint64 // GET /ssh/revoked
	revokedStatus   int      // of GET /ssh/revoked; 0 is 200
}

const fakeToken = "gateway-token"

func newFakeIssuer(t *testing.T) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{answers: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ssh/authority", func(w http.ResponseWriter, _ *http.Request) {
		f.authorityCalls.Add(1)
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if f.authorityStatus != 0 {
			w.WriteHeader(f.authorityStatus)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string][]string{"authorities": f.authorities})
	})
	mux.HandleFunc("GET /ssh/revoked", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if f.revokedStatus != 0 {
			w.WriteHeader(f.revokedStatus)
			return
		}
		list := []map[string]any{}
		for _, s := range f.revoked {
			list = append(list, map[string]any{"serial": strconv.FormatUint(s, 10), "token_id": "fam.x", "expires_at": time.Now().Add(time.Hour).Unix()})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"version": len(f.revoked), "revoked": list})
	})
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if id, secret, _ := r.BasicAuth(); id != gatewayID || secret != gatewaySecret || r.FormValue("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"` + fakeToken + `","token_type":"bearer","expires_in":3600}`))
	})
	mux.HandleFunc("GET /api/orgs/{org}/access/{user}", func(w http.ResponseWriter, r *http.Request) {
		f.lookups.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_token"}`))
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.status != 0 {
			w.WriteHeader(f.status)
			_, _ = w.Write([]byte(`{"error":"server_error"}`))
			return
		}
		body, ok := f.answers[r.PathValue("org")+"/"+r.PathValue("user")]
		if !ok {
			body = `{"member": false}`
		}
		_, _ = w.Write([]byte(body))
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// trust lists ca at GET /ssh/authority.
func (f *fakeIssuer) trust(ca testCA) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authorities = append(f.authorities, strings.TrimSpace(ca.authorizedKey()))
}

// member makes userID a member of org with requirements (JSON).
func (f *fakeIssuer) member(org, userID, requirements string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[org+"/"+userID] = `{"member": true, "role": "member", "requirements": ` + requirements + `}`
}

func (f *fakeIssuer) domain(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname()
}

// testCA is a user CA as the server runs one.
type testCA struct {
	signer    ssh.Signer
	authority *sshca.Authority
}

func newTestCA(t *testing.T, domain string) testCA {
	t.Helper()
	ks, err := sshca.NewKeySet(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ks.Signer()
	if err != nil {
		t.Fatal(err)
	}
	a, err := sshca.New(sshca.Config{Domain: domain}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{signer, a}
}

// authorizedKey is the CA's line for TrustedUserCAKeys.
func (ca testCA) authorizedKey() string {
	return string(ssh.MarshalAuthorizedKey(ca.signer.PublicKey()))
}

// sign certifies key for username (user id userID) with amr, logged in at
// authTime.
func (ca testCA) sign(t *testing.T, key ssh.PublicKey, username, userID string, authTime time.Time, amr ...string) *ssh.Certificate {
	t.Helper()
	cert, err := ca.authority.Sign(sshca.Request{PublicKey: key, UserID: userID, Username: username, TokenID: "jti-" + userID,
		TokenExpiry: time.Now().Add(time.Hour), Claims: sshca.Claims{AMR: amr, AuthTime: authTime.Unix(), Grant: "authorization_code"}})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newUserKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// sshdArgs are what sshd substitutes for %t %k.
func sshdArgs(key ssh.PublicKey) []string {
	return []string{key.Type(), base64.StdEncoding.EncodeToString(key.Marshal())}
}

func writeGatewayConfig(t *testing.T, issuer string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := fmt.Sprintf("gateway: {client_id: %s, client_secret: %q}\n", gatewayID, gatewaySecret)
	if issuer != "" {
		yaml = "issuer: " + issuer + "\n" + yaml
	}
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type principalsRun struct {
	code           int
	stdout, stderr string
}

func runPrincipalsCmd(args ...string) principalsRun {
	var out, errOut bytes.Buffer
	noEnv := func(string) (string, bool) { return "", false }
	code := runPrincipals(context.Background(), args, noEnv, &out, &errOut, time.Now)
	return principalsRun{code, out.String(), errOut.String()}
}

func TestPrincipals(t *testing.T) {
	f := newFakeIssuer(t)
	ca := newTestCA(t, f.domain(t))
	f.trust(ca)
	f.member("acme", "u_alice", `{"amr": ["mfa"], "max_age": 3600}`)
	f.member("acme", "u_carol", `{"amr": ["mfa", "sso:acme"]}`)
	cfg := writeGatewayConfig(t, f.URL)
	now := time.Now()
	key := newUserKey(t)
	withMFA := ca.sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa")

	hostCert := ca.sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa")
	hostCert.CertType = ssh.HostCert
	if err := hostCert.SignCert(rand.Reader, ca.signer); err != nil {
		t.Fatal(err)
	}
	otherDomain := newTestCA(t, "id.example.com")
	f.trust(otherDomain) // so that it is the domain that is wrong
	// A CA that sshd may trust beside Stepup's (TrustedUserCAKeys takes
	// several), writing claims for Stepup's domain.
	rogue := newTestCA(t, f.domain(t))

	for _, tc := range []struct {
		name    string
		account string
		key     []string // %t %k
		code    int
		says    []string // on stderr; none for an admission
		lookups int32    // whether the server was asked
	}{
		{"ok/member-with-mfa", "alice", sshdArgs(withMFA), exitDecided, nil, 1},
		{"fail/member-without-mfa", "alice", sshdArgs(ca.sign(t, key, "alice", "u_alice", now, "pwd")), exitDecided,
			[]string{`refused certificate ID "u_alice"`, `account "alice"`, `organization "acme" requires more authentication: Multi-factor authentication (MFA)`}, 1},
		{"fail/login-too-old", "alice", sshdArgs(ca.sign(t, key, "alice", "u_alice", now.Add(-2*time.Hour), "pwd", "otp", "mfa")), exitDecided,
			[]string{"requires more authentication: A login within the last 1 hour"}, 1},
		{"fail/all-that-is-missing", "carol", sshdArgs(ca.sign(t, key, "carol", "u_carol", now, "pwd")), exitDecided,
			[]string{`Multi-factor authentication (MFA); Single sign-on (SSO), provider: "acme"`}, 1},
		{"fail/not-a-member", "bob", sshdArgs(ca.sign(t, key, "bob", "u_bob", now, "pwd", "otp", "mfa")), exitDecided,
			[]string{`"u_bob" is not a member of organization "acme"`}, 1},
		// sshd matches the printed lines against the certificate alone, so
		// the account must be checked here or alice could be root.
		{"fail/another-account", "root", sshdArgs(withMFA), exitDecided,
			[]string{`account "root": it is for ["alice"], not for that account`}, 0},
		{"fail/host-certificate", "alice", sshdArgs(hostCert), exitDecided, []string{"not a user certificate"}, 0},
		{"fail/plain-key", "alice", sshdArgs(key), exitDecided, []string{"refused a plain ssh-ed25519 key", "only certificates"}, 0},
		{"fail/other-domain", "alice", sshdArgs(otherDomain.sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa")), exitDecided,
			[]string{"not a certificate from " + f.URL, "token-claims@" + f.domain(t)}, 0},
		{"fail/another-ca", "alice", sshdArgs(rogue.sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa")), exitDecided,
			[]string{`refused certificate ID "u_alice"`, `account "alice": signed by ssh-ed25519 ` + ssh.FingerprintSHA256(rogue.signer.PublicKey()),
				"not one of the 2 SSH certificate authorities " + f.URL + " lists"}, 0},
		{"fail/not-base64", "alice", []string{withMFA.Type(), "%%not base64%%"}, exitFailed, []string{"not base64", "%u %t %k"}, 0},
		{"fail/not-a-key", "alice", []string{withMFA.Type(), base64.StdEncoding.EncodeToString([]byte("junk"))}, exitFailed, []string{"not an SSH key"}, 0},
		{"fail/arguments-swapped", "alice", []string{sshdArgs(withMFA)[1], withMFA.Type()}, exitFailed, []string{"not base64"}, 0},
		{"fail/type-mismatch", "alice", []string{ssh.KeyAlgoED25519, sshdArgs(withMFA)[1]}, exitFailed, []string{`KEY-TYPE argument "ssh-ed25519" does not match`}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.lookups.Load()
			got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false", tc.account}, tc.key...)...)
			want := ""
			if tc.says == nil {
				want = tc.account + "\n"
			}
			if got.code != tc.code || got.stdout != want {
				t.Fatalf("got status %d, stdout %q; want %d, %q\nstderr: %s", got.code, got.stdout, tc.code, want, got.stderr)
			}
			if tc.says == nil && got.stderr != "" {
				t.Errorf("stderr on admission: %q", got.stderr)
			}
			for _, s := range tc.says {
				if !strings.Contains(got.stderr, s) {
					t.Errorf("stderr does not say %q:\n%s", s, got.stderr)
				}
			}
			if strings.Count(got.stderr, "\n") > 1 {
				t.Errorf("the reason is not one line: %q", got.stderr)
			}
			if n := f.lookups.Load() - before; n != tc.lookups {
				t.Errorf("%d access lookups, want %d", n, tc.lookups)
			}
		})
	}

	good := append([]string{"alice"}, sshdArgs(withMFA)...)
	t.Run("ok/one-fetch-of-the-authorities", func(t *testing.T) {
		// A certificate from an unknown CA does not make the cache ask
		// again, as the gateway would a little later.
		before := f.authorityCalls.Load()
		rogueArgs := append([]string{"alice"}, sshdArgs(rogue.sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa"))...)
		for _, args := range [][]string{good, rogueArgs} {
			runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, args...)...)
		}
		if n := f.authorityCalls.Load() - before; n != 2 {
			t.Errorf("%d fetches of the authorities for two runs, want 2", n)
		}
	})
	t.Run("fail/authorities-unavailable", func(t *testing.T) {
		f.mu.Lock()
		f.authorityStatus = http.StatusServiceUnavailable
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.authorityStatus = 0; f.mu.Unlock() }()
		before := f.lookups.Load()
		got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, good...)...)
		if got.code != exitFailed || got.stdout != "" || !strings.Contains(got.stderr, "no answer for certificate") ||
			!strings.Contains(got.stderr, "SSH certificate authorities") || !strings.Contains(got.stderr, "503") {
			t.Fatalf("%+v", got)
		}
		if n := f.lookups.Load() - before; n != 0 {
			t.Errorf("%d access lookups without the authorities", n)
		}
	})
	t.Run("fail/no-authorities-listed", func(t *testing.T) {
		f.mu.Lock()
		saved := f.authorities
		f.authorities = nil
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.authorities = saved; f.mu.Unlock() }()
		got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, good...)...)
		if got.code != exitDecided || got.stdout != "" || !strings.Contains(got.stderr, "not one of the 0 SSH certificate authorities") {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("fail/server-error", func(t *testing.T) {
		f.mu.Lock()
		f.status = http.StatusServiceUnavailable
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.status = 0; f.mu.Unlock() }()
		got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, good...)...)
		if got.code != exitFailed || got.stdout != "" || !strings.Contains(got.stderr, "no answer for certificate") || !strings.Contains(got.stderr, "503") {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("fail/wrong-client-secret", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "wrong.yaml")
		if err := os.WriteFile(path, []byte("issuer: "+f.URL+"\ngateway: {client_id: "+gatewayID+", client_secret: wrong}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got := runPrincipalsCmd(append([]string{"--config", path, "--org", "acme", "--syslog=false"}, good...)...)
		if got.code != exitFailed || got.stdout != "" || !strings.Contains(got.stderr, "getting a token") {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("ok/issuer-flag", func(t *testing.T) {
		got := runPrincipalsCmd(append([]string{"--config", writeGatewayConfig(t, ""), "--issuer", f.URL, "--org", "acme", "--syslog=false"}, good...)...)
		if got != (principalsRun{exitDecided, "alice\n", ""}) {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("fail/revoked", func(t *testing.T) {
		revokedCert := ca.sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa")
		f.mu.Lock()
		f.revoked = append(f.revoked, revokedCert.Serial)
		f.mu.Unlock()
		before := f.lookups.Load()
		got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false", "alice"}, sshdArgs(revokedCert)...)...)
		want := fmt.Sprintf("stepup-gateway principals: refused certificate ID \"u_alice\" (serial %d) for account \"alice\": it has been revoked\n", revokedCert.Serial)
		if got != (principalsRun{exitDecided, "", want}) {
			t.Fatalf("%+v, want stderr %q", got, want)
		}
		if n := f.lookups.Load() - before; n != 0 {
			t.Errorf("%d access lookups for a revoked certificate", n)
		}
		// Other certificates of the same person still get in.
		if got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, good...)...); got != (principalsRun{exitDecided, "alice\n", ""}) {
			t.Errorf("another certificate: %+v", got)
		}
	})
	t.Run("fail/revocation-list-unavailable", func(t *testing.T) {
		f.mu.Lock()
		f.revokedStatus = http.StatusServiceUnavailable
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.revokedStatus = 0; f.mu.Unlock() }()
		got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, good...)...)
		if got.code != exitFailed || got.stdout != "" || !strings.Contains(got.stderr, "no answer for certificate") ||
			!strings.Contains(got.stderr, "SSH revocation list") || !strings.Contains(got.stderr, "503") {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("fail/server-down", func(t *testing.T) {
		down := newFakeIssuer(t)
		downCfg := writeGatewayConfig(t, down.URL)
		cert := newTestCA(t, down.domain(t)).sign(t, key, "alice", "u_alice", now, "pwd", "otp", "mfa")
		down.Close()
		got := runPrincipalsCmd(append([]string{"--config", downCfg, "--org", "acme", "--syslog=false", "alice"}, sshdArgs(cert)...)...)
		if got.code != exitFailed || got.stdout != "" || !strings.Contains(got.stderr, "no answer for certificate") {
			t.Fatalf("%+v", got)
		}
	})
}

// TestPrincipalsSyslog: by default a refusal's reason also goes to the
// local syslog socket, as one auth.notice message.
func TestPrincipalsSyslog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	saved := syslogSockets
	syslogSockets = []string{filepath.Join(t.TempDir(), "none"), sock}
	defer func() { syslogSockets = saved }()

	f := newFakeIssuer(t)
	ca := newTestCA(t, f.domain(t))
	f.trust(ca)
	f.member("acme", "u_alice", `{"amr": ["mfa"]}`)
	cfg := writeGatewayConfig(t, f.URL)
	key := newUserKey(t)
	weak := ca.sign(t, key, "alice", "u_alice", time.Now(), "pwd")
	got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "alice"}, sshdArgs(weak)...)...)
	if got.code != exitDecided || got.stdout != "" {
		t.Fatalf("%+v", got)
	}
	buf := make([]byte, 4096)
	_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	want := fmt.Sprintf(`stepup-gateway[%d]: principals: refused certificate ID "u_alice" (serial %d) for account "alice": organization "acme" requires more authentication: Multi-factor authentication (MFA)`, os.Getpid(), weak.Serial)
	if !strings.HasPrefix(msg, "<37>") || !strings.HasSuffix(msg, want) {
		t.Errorf("syslog got %q, want <37>TIMESTAMP %s", msg, want)
	}

	// An admission is sshd's to log.
	good := ca.sign(t, key, "alice", "u_alice", time.Now(), "pwd", "otp", "mfa")
	if got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "alice"}, sshdArgs(good)...)...); got.stdout != "alice\n" {
		t.Fatalf("%+v", got)
	}
	_ = ln.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := ln.Read(buf); err == nil {
		t.Errorf("syslog got %q for an admission", buf[:n])
	}
}

// TestPrincipalsRefusesToStart: without a usable configuration or the
// arguments sshd should pass, nothing is printed.
func TestPrincipalsRefusesToStart(t *testing.T) {
	f := newFakeIssuer(t)
	ca := newTestCA(t, f.domain(t))
	f.trust(ca)
	f.member("acme", "u_alice", `{"amr": []}`)
	cfg := writeGatewayConfig(t, f.URL)
	good := append([]string{"alice"}, sshdArgs(ca.sign(t, newUserKey(t), "alice", "u_alice", time.Now(), "pwd"))...)
	if got := runPrincipalsCmd(append([]string{"--config", cfg, "--org", "acme", "--syslog=false"}, good...)...); got.stdout != "alice\n" {
		t.Fatalf("the control case is refused: %+v", got)
	}
	noCreds := filepath.Join(t.TempDir(), "nocreds.yaml")
	if err := os.WriteFile(noCreds, []byte("issuer: "+f.URL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"no-org", append([]string{"--config", cfg}, good...), exitBadUsage, "--org is required"},
		{"too-few-arguments", append([]string{"--config", cfg, "--org", "acme"}, good[1:]...), exitBadUsage, "takes ACCOUNT KEY-TYPE CERTIFICATE"},
		{"unknown-flag", append([]string{"--config", cfg, "--org", "acme", "--allow", "bob"}, good...), exitBadUsage, "flag provided but not defined"},
		{"help", []string{"-h"}, exitDecided, "AuthorizedPrincipalsCommand"},
		{"no-client-credentials", append([]string{"--config", noCreds, "--org", "acme"}, good...), exitFailed, "gateway.client_id and gateway.client_secret are required"},
		{"config-typo", append([]string{"--config", writeFile(t, "gatway: {}\n"), "--org", "acme"}, good...), exitFailed, "unknown key"},
		{"missing-config", append([]string{"--config", filepath.Join(t.TempDir(), "none.yaml"), "--org", "acme"}, good...), exitFailed, "no such file"},
		{"no-issuer", append([]string{"--config", writeGatewayConfig(t, ""), "--org", "acme"}, good...), exitFailed, "give --issuer"},
		{"http-issuer", append([]string{"--config", cfg, "--issuer", "http://id.example.com", "--org", "acme"}, good...), exitFailed, "use https"},
	} {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			got := runPrincipalsCmd(tc.args...)
			if got.code != tc.code || got.stdout != "" || !strings.Contains(got.stderr, tc.says) {
				t.Fatalf("got %+v; want status %d, no output, stderr saying %q", got, tc.code, tc.says)
			}
		})
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPrincipalsWithSSHD runs the built command as the
// AuthorizedPrincipalsCommand of a real sshd that trusts a Stepup CA, and
// logs in with the real ssh.
func TestPrincipalsWithSSHD(t *testing.T) {
	testenv.Require(t, "ssh-keygen", "openssh-client")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeIssuer(t)
	ca := newTestCA(t, f.domain(t))
	f.trust(ca)
	f.member("acme", "u_me", `{"amr": ["mfa"]}`)
	f.member("acme", "u_alice", `{"amr": ["mfa"]}`)

	// sshd runs the command only if it and every directory above it are
	// owned by root or the command's user and writable by no one else,
	// which rules out anything under /tmp.
	bin := filepath.Join(safeDir(t, me), "stepup-gateway")
	copyExecutable(t, gatewayBinary(t), bin)

	dir := t.TempDir()
	logPath := filepath.Join(dir, "sshd.log")
	// As README has it, less syslog: the reasons are to be found in
	// sshd's log, which with -e is its standard error and the command's.
	command := strings.Join([]string{bin, "principals", "--config", writeGatewayConfig(t, f.URL), "--org", "acme", "--syslog=false", "%u", "%t", "%k"}, " ")
	// sshd trusts a second CA beside Stepup's, as a host may; only the
	// command keeps its certificates from passing for Stepup's.
	rogue := newTestCA(t, f.domain(t))
	addr := startPrincipalsSSHD(t, ca.authorizedKey()+rogue.authorizedKey(), command, me.Username, logPath)

	// The certificates are kept apart from the key, so that ssh presents
	// only the one it is given.
	key := newKey(t, dir, "id")
	pubLine, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sshca.ParsePublicKey(string(pubLine))
	if err != nil {
		t.Fatal(err)
	}
	certFile := func(name string, cert *ssh.Certificate) string {
		path := filepath.Join(t.TempDir(), name+"-cert.pub")
		if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	enough := certFile("enough", ca.sign(t, pub, me.Username, "u_me", now, "pwd", "otp", "mfa"))
	passwordOnly := certFile("password-only", ca.sign(t, pub, me.Username, "u_me", now, "pwd"))
	alice := certFile("alice", ca.sign(t, pub, "alice", "u_alice", now, "pwd", "otp", "mfa"))
	forged := certFile("forged", rogue.sign(t, pub, me.Username, "u_me", now, "pwd", "otp", "mfa"))

	t.Run("ok/amr-satisfies-the-org", func(t *testing.T) {
		stdout, stderr, err := testenv.SSH(t, addr, key, enough, me.Username, "echo", "ok")
		if err != nil || stdout != "ok\n" {
			t.Fatalf("ssh: %v, stdout %q, stderr %q\nsshd log:\n%s", err, stdout, stderr, readLog(logPath))
		}
	})
	t.Run("fail/missing-mfa", func(t *testing.T) {
		stdout, stderr, err := testenv.SSH(t, addr, key, passwordOnly, me.Username, "echo", "ok")
		if err == nil || stdout != "" || !strings.Contains(stderr, "Permission denied") {
			t.Fatalf("ssh: %v, stdout %q, stderr %q", err, stdout, stderr)
		}
		waitForLog(t, logPath,
			fmt.Sprintf(`stepup-gateway principals: refused certificate ID "u_me" (serial %d) for account %q: organization "acme" requires more authentication: Multi-factor authentication (MFA)`+"\n", serialOf(t, passwordOnly), me.Username),
			"Certificate does not contain an authorized principal")
	})
	t.Run("fail/another-ca-sshd-trusts", func(t *testing.T) {
		stdout, stderr, err := testenv.SSH(t, addr, key, forged, me.Username, "echo", "ok")
		if err == nil || stdout != "" || !strings.Contains(stderr, "Permission denied") {
			t.Fatalf("ssh: %v, stdout %q, stderr %q\nsshd log:\n%s", err, stdout, stderr, readLog(logPath))
		}
		waitForLog(t, logPath,
			fmt.Sprintf(`stepup-gateway principals: refused certificate ID "u_me" (serial %d) for account %q: signed by ssh-ed25519 %s, which is not one of the 1 SSH certificate authorities %s lists`,
				serialOf(t, forged), me.Username, ssh.FingerprintSHA256(rogue.signer.PublicKey()), f.URL),
			"Certificate does not contain an authorized principal")
	})
	t.Run("fail/someone-elses-account", func(t *testing.T) {
		stdout, stderr, err := testenv.SSH(t, addr, key, alice, me.Username, "echo", "ok")
		if err == nil || stdout != "" || !strings.Contains(stderr, "Permission denied") {
			t.Fatalf("ssh: %v, stdout %q, stderr %q", err, stdout, stderr)
		}
		waitForLog(t, logPath, fmt.Sprintf(`stepup-gateway principals: refused certificate ID "u_alice" (serial %d) for account %q: it is for ["alice"], not for that account`, serialOf(t, alice), me.Username))
	})
}

func serialOf(t *testing.T, certFile string) uint64 {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ssh.Certificate).Serial
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// waitForLog waits for lines containing each of want: sshd's connection
// processes may write after the client has gone.
func waitForLog(t *testing.T, path string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := readLog(path)
		missing := ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say %q:\n%s", missing, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// safeDir returns a new directory, removed after the test, whose every
// ancestor belongs to root or me and is writable by no one else, as sshd
// demands of the directories above an AuthorizedPrincipalsCommand.
func safeDir(t *testing.T, me *user.User) string {
	t.Helper()
	uid, err := strconv.Atoi(me.Uid)
	if err != nil {
		t.Fatal(err)
	}
	safe := func(dir string) bool {
		for {
			var st syscall.Stat_t
			if err := syscall.Stat(dir, &st); err != nil || (st.Uid != 0 && int(st.Uid) != uid) || st.Mode&0o022 != 0 {
				return false
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return true
			}
			dir = parent
		}
	}
	var bases []string
	if d, err := os.UserCacheDir(); err == nil {
		bases = append(bases, d)
	}
	if d, err := os.UserHomeDir(); err == nil {
		bases = append(bases, d)
	}
	for _, base := range bases {
		if !safe(base) {
			continue
		}
		dir, err := os.MkdirTemp(base, "stepup-principals-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Fatalf("no directory for the AuthorizedPrincipalsCommand that sshd would accept among %q", bases)
	return ""
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode passes through the umask.
	if err := os.Chmod(to, 0o755); err != nil {
		t.Fatal(err)
	}
}

// startPrincipalsSSHD starts a private sshd that trusts caKey and asks
// command, run as runAs, which principals may log in. sshd's log, with the
// command's standard error, goes to logPath. It returns "127.0.0.1:PORT"
// once sshd greets.
func startPrincipalsSSHD(t *testing.T, caKey, command, runAs, logPath string) string {
	t.Helper()
	bin := testenv.RequireSSHD(t)
	dir := t.TempDir()
	hostKey := newKey(t, dir, "ssh_host_ed25519_key")
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	if err := os.WriteFile(caFile, []byte(caKey), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// A root sshd chroots its pre-authentication child there.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Appending, so that a retry on another port keeps the log of the
	// failed try.
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logFile.Close() })

	var lastErr error
	for try := range 3 {
		port := testenv.FreePort(t)
		config := filepath.Join(dir, fmt.Sprintf("sshd_config.%d", try))
		if err := os.WriteFile(config, []byte(strings.Join([]string{
			"ListenAddress 127.0.0.1",
			"Port " + strconv.Itoa(port),
			"HostKey " + hostKey,
			"PidFile none",
			"TrustedUserCAKeys " + caFile,
			"AuthorizedPrincipalsCommand " + command,
			"AuthorizedPrincipalsCommandUser " + runAs,
			"AuthorizedKeysFile none",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PermitRootLogin prohibit-password",
			"UsePAM no",
			"StrictModes no",
			"LogLevel VERBOSE",
			"",
		}, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-D", "-e", "-f", config)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		// Its own process group, so that the cleanup ends connection
		// processes too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if lastErr = waitForSSHBanner(addr, done); lastErr == nil {
			t.Cleanup(stop)
			return addr
		}
		stop()
	}
	t.Fatalf("sshd did not start: %v\n%s", lastErr, readLog(logPath))
	return ""
}

// waitForSSHBanner waits until addr greets like an SSH server, or sshd
// exits (the port taken since FreePort, say).
func waitForSSHBanner(addr string, done <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			line, rerr := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				return nil
			}
		}
		select {
		case <-done:
			return errors.New("sshd exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no SSH banner from %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

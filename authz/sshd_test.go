package authz_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// TestCertificatesWithRealSSHD logs alice in, has the server certify a key
// made by the real ssh-keygen, and logs in with it to the real OpenSSH
// server trusting the authorities GET /ssh/authority publishes. Each
// refusal is shown to be the one intended: sshd's log names the reason,
// and the good certificate gets into the same sshd with the same client
// invocation.
func TestCertificatesWithRealSSHD(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	testenv.Require(t, "ssh", "openssh-client")
	testenv.RequireSSHD(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	ts := newTestServer(t, nil)
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	issuer, err := url.Parse(ts.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	domain := issuer.Hostname()

	dir := t.TempDir()
	identity := filepath.Join(dir, "id_ed25519")
	sshdKeygen(t, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "alice@stepup-test", "-f", identity)
	pubLine, err := os.ReadFile(identity + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	goodCert := identity + "-cert.pub"
	writeFile(t, goodCert, sshdIssue(t, ts, tok.AccessToken, string(pubLine))+"\n")
	authorities := sshdAuthorities(t, ts)

	// ssh loads <identity>-cert.pub by itself, so the cases that must
	// present only some other certificate use a copy of the private key
	// that has none beside it.
	bare := filepath.Join(dir, "bare", "id_ed25519")
	if err := os.MkdirAll(filepath.Dir(bare), 0o700); err != nil {
		t.Fatal(err)
	}
	priv, err := os.ReadFile(identity)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bare, string(priv))

	userKey, err := sshca.ParsePublicKey(string(pubLine))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sign := func(ca ssh.Signer, at time.Time, name string, req sshca.Request) string {
		t.Helper()
		a, err := sshca.New(sshca.Config{Domain: domain, Now: func() time.Time { return at }}, ca)
		if err != nil {
			t.Fatal(err)
		}
		req.PublicKey = userKey
		req.TokenID = "jti-" + name
		cert, err := a.Sign(req)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+"-cert.pub")
		writeFile(t, path, string(ssh.MarshalAuthorizedKey(cert)))
		return path
	}

	// otherCA is a CA the server never heard of. pastCA signs once with a
	// clock three hours behind, for a token that expired two hours ago
	// (the server's CA key is sealed in its store, out of a test's reach),
	// and once for now, to show that only the time differs.
	otherCA, pastCA := newCA(t), newCA(t)
	inHour := now.Add(time.Hour)
	otherCACert := sign(otherCA, now, "other-ca", sshca.Request{UserID: "u_other_ca", Username: "alice", TokenExpiry: inHour})
	malloryCert := sign(otherCA, now, "mallory", sshca.Request{UserID: "u_mallory", Username: "mallory", TokenExpiry: inHour})
	expiredCert := sign(pastCA, now.Add(-3*time.Hour), "expired", sshca.Request{UserID: "u_expired", Username: "alice", TokenExpiry: now.Add(-2 * time.Hour)})
	pastCAValidCert := sign(pastCA, now, "past-ca-valid", sshca.Request{UserID: "u_past_ca_valid", Username: "alice", TokenExpiry: inHour})

	t.Run("issued-certificate", func(t *testing.T) {
		out := sshdKeygen(t, keygen, "-L", "-f", goodCert)
		t.Logf("ssh-keygen -L %s:\n%s", goodCert, out)
		for _, want := range []string{
			"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
			`Key ID: "u_alice"`,
			"token-claims@" + domain,
			"token-id@" + domain,
			"permit-pty",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("ssh-keygen -L lacks %q", want)
			}
		}
		if !regexp.MustCompile(`Principals:\s*\n\s+alice\n\s+Critical Options`).MatchString(out) {
			t.Error("ssh-keygen -L does not list alice as the one principal")
		}
		_, at := jwtParts(t, tok.AccessToken)
		exp := time.Unix(int64(at["exp"].(float64)), 0).UTC()
		from, to := validity(t, out)
		if issued := time.Now().UTC(); from.After(issued) || to.After(issued.Add(time.Hour)) || to.After(exp) {
			t.Errorf("valid from %s to %s; want from before now (%s), at most an hour ahead and not past the token's expiry %s", from, to, issued, exp)
		}
		// ssh-keygen prints the token extensions' data in hex: an SSH
		// string holding the value.
		for name, want := range map[string]string{
			"token-id@" + domain:     at["jti"].(string),
			"token-claims@" + domain: `"amr":["pwd"]`,
		} {
			m := regexp.MustCompile(regexp.QuoteMeta(name) + ` UNKNOWN OPTION: ([0-9a-f]+)`).FindStringSubmatch(out)
			if m == nil {
				t.Logf("ssh-keygen does not print the value of %s; only its name was checked", name)
				continue
			}
			data, err := hex.DecodeString(m[1])
			var v struct{ Value string }
			if err == nil {
				err = ssh.Unmarshal(data, &v)
			}
			if err != nil || !strings.Contains(v.Value, want) {
				t.Errorf("%s as OpenSSH reads it = %q (%v), want it to hold %s", name, v.Value, err, want)
			}
		}
		if len(authorities) == 0 || !strings.Contains(out, "Signing CA: ED25519 "+fingerprint(t, authorities[0])) {
			t.Errorf("not signed by the first authority the server publishes, %v", authorities)
		}
	})

	// The server's sshd trusts exactly what GET /ssh/authority lists.
	serverSSHD := testenv.StartSSHD(t, strings.Join(authorities, "\n"))
	// The mixed sshd trusts those and the two test CAs as well, so that
	// every refusal there can be set beside an acceptance.
	mixedSSHD := testenv.StartSSHD(t, strings.Join(append(append([]string{}, authorities...),
		authorizedLine(otherCA.PublicKey()), authorizedLine(pastCA.PublicKey())), "\n"))

	t.Run("ok", func(t *testing.T) {
		for _, addr := range []string{serverSSHD, mixedSSHD} {
			expectLogin(t, addr, identity, goodCert, me.Username, "u_alice")
		}
	})
	t.Run("ok/other-ca-where-trusted", func(t *testing.T) {
		expectLogin(t, mixedSSHD, bare, otherCACert, me.Username, "u_other_ca")
	})

	t.Run("fail/other-ca", func(t *testing.T) {
		// sshd says why only at DEBUG2 ("CA ... is not listed"): what shows
		// the reason is that the same certificate gets into mixedSSHD
		// (above) and the server's certificate into this one.
		line := expectRefusal(t, serverSSHD, bare, otherCACert, me.Username, "u_other_ca", `Failed publickey for `+regexp.QuoteMeta(me.Username)+` from 127\.0\.0\.1 .* ID u_other_ca \(serial \d+\) CA ED25519 `+regexp.QuoteMeta(ssh.FingerprintSHA256(otherCA.PublicKey())))
		t.Logf("sshd: %s", line)
		expectLogin(t, serverSSHD, identity, goodCert, me.Username, "u_alice")
	})

	t.Run("fail/expired", func(t *testing.T) {
		out := sshdKeygen(t, keygen, "-L", "-f", expiredCert)
		from, to := validity(t, out)
		if !to.Before(time.Now().Add(-time.Hour)) || !from.Before(to) {
			t.Fatalf("expired certificate valid from %s to %s; want a window that ended over an hour ago", from, to)
		}
		line := expectRefusal(t, mixedSSHD, bare, expiredCert, me.Username, "u_expired", `Certificate invalid: expired`)
		t.Logf("sshd: %s", line)
		// The same CA's certificate for now, and the server's, get in.
		expectLogin(t, mixedSSHD, bare, pastCAValidCert, me.Username, "u_past_ca_valid")
		expectLogin(t, mixedSSHD, identity, goodCert, me.Username, "u_alice")
	})

	t.Run("fail/wrong-principal", func(t *testing.T) {
		line := expectRefusal(t, mixedSSHD, bare, malloryCert, me.Username, "u_mallory", `Certificate does not contain an authorized principal`)
		t.Logf("sshd: %s", line)
		// The same CA's certificate for alice gets in (ok/other-ca-where-trusted).
		expectLogin(t, mixedSSHD, bare, otherCACert, me.Username, "u_other_ca")
	})
}

// expectLogin runs `echo stepup-ok` over ssh and checks that it ran, and
// that sshd accepted the certificate with key id keyID.
func expectLogin(t *testing.T, addr, identity, cert, remoteUser, keyID string) {
	t.Helper()
	mark := len(testenv.SSHDLog(addr))
	stdout, stderr, err := testenv.SSH(t, addr, identity, cert, remoteUser, "echo", "stepup-ok")
	if err != nil || strings.TrimSpace(stdout) != "stepup-ok" {
		t.Fatalf("ssh %s@%s with %s: %v\nstdout: %q\nstderr: %s\nsshd log:\n%s",
			remoteUser, addr, filepath.Base(cert), err, stdout, stderr, testenv.SSHDLog(addr)[mark:])
	}
	waitForLog(t, addr, mark, `Accepted publickey for `+regexp.QuoteMeta(remoteUser)+` from 127\.0\.0\.1 .* ID `+regexp.QuoteMeta(keyID)+` \(serial`)
}

// expectRefusal runs the same ssh command as expectLogin and checks that
// authentication was refused, that sshd logged a line matching reason, and
// that the certificate it turned down is the one with key id keyID.
func expectRefusal(t *testing.T, addr, identity, cert, remoteUser, keyID, reason string) string {
	t.Helper()
	mark := len(testenv.SSHDLog(addr))
	stdout, stderr, err := testenv.SSH(t, addr, identity, cert, remoteUser, "echo", "stepup-ok")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 255 || strings.Contains(stdout, "stepup-ok") || !strings.Contains(stderr, "Permission denied (publickey)") {
		t.Fatalf("ssh %s@%s with %s: %v; want exit status 255 and Permission denied (publickey)\nstdout: %q\nstderr: %s\nsshd log:\n%s",
			remoteUser, addr, filepath.Base(cert), err, stdout, stderr, testenv.SSHDLog(addr)[mark:])
	}
	line := waitForLog(t, addr, mark, reason)
	waitForLog(t, addr, mark, `Failed publickey for `+regexp.QuoteMeta(remoteUser)+` from 127\.0\.0\.1 .* ID `+regexp.QuoteMeta(keyID)+` \(serial`)
	if strings.Contains(testenv.SSHDLog(addr)[mark:], "Accepted publickey") {
		t.Fatalf("sshd at %s accepted a key although ssh reported failure:\n%s", addr, testenv.SSHDLog(addr)[mark:])
	}
	return line
}

// waitForLog returns the first line logged by the sshd at addr after byte
// mark that matches pattern, waiting for it a few seconds: the line comes
// from the connection's processes and may trail the client's exit.
func waitForLog(t *testing.T, addr string, mark int, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(5 * time.Second)
	for {
		log := testenv.SSHDLog(addr)[mark:]
		if m := re.FindString(log); m != "" {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd at %s logged no line matching %q; it logged:\n%s", addr, pattern, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sshdKeygen runs ssh-keygen in UTC, so that validity windows print in UTC.
func sshdKeygen(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var validLine = regexp.MustCompile(`Valid: from (\S+) to (\S+)`)

// validity reads the window from ssh-keygen -L output (printed in UTC).
func validity(t *testing.T, out string) (from, to time.Time) {
	t.Helper()
	m := validLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no validity window in ssh-keygen -L output:\n%s", out)
	}
	var err error
	if from, err = time.Parse("2006-01-02T15:04:05", m[1]); err != nil {
		t.Fatal(err)
	}
	if to, err = time.Parse("2006-01-02T15:04:05", m[2]); err != nil {
		t.Fatal(err)
	}
	return from, to
}

// sshdIssue is POST /ssh with a public key line; it returns the certificate.
func sshdIssue(t *testing.T, ts *testServer, accessToken, pubLine string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"key": strings.TrimSpace(pubLine)})
	req, _ := http.NewRequest(http.MethodPost, ts.Issuer+"/ssh", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Certificate string `json:"certificate"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Certificate == "" {
		t.Fatalf("POST /ssh: %d, %v, %+v", resp.StatusCode, err, out)
	}
	return out.Certificate
}

// sshdAuthorities is GET /ssh/authority.
func sshdAuthorities(t *testing.T, ts *testServer) []string {
	t.Helper()
	resp, err := http.Get(ts.Issuer + "/ssh/authority")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Authorities []string `json:"authorities"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Authorities) == 0 {
		t.Fatalf("GET /ssh/authority: %d, %v, %+v", resp.StatusCode, err, out)
	}
	return out.Authorities
}

func newCA(t *testing.T) ssh.Signer {
	t.Helper()
	ks, err := sshca.NewKeySet(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ks.Signer()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authorizedLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func fingerprint(t *testing.T, line string) string {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("authority %q: %v", line, err)
	}
	return ssh.FingerprintSHA256(k)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSSHDKeepsTrustAcrossCARotation: an sshd whose TrustedUserCAKeys file
// was fetched before a CA rotation accepts a certificate signed after it,
// because the key a rotation brings in was listed a period ahead.
func TestSSHDKeepsTrustAcrossCARotation(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	testenv.Require(t, "ssh", "openssh-client")
	testenv.RequireSSHD(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	// Replica b shares a's store and runs an hour and more ahead: its
	// rotation is the one a finds in the store. (a's own clock stays put:
	// tokens are checked against the wall clock too.)
	a := newTestServer(t, nil)
	later := &clock{}
	b := newTestServer(t, func(c *authz.Config) { c.Store, c.Now, c.SSHCARotation = a.Store, later.Now, time.Hour })
	tok, _ := exchange(t, a, newBrowser(t, a.Issuer))

	before := sshdAuthorities(t, b) // makes the CA; fetched once, never refreshed
	sshd := testenv.StartSSHD(t, strings.Join(before, "\n"))
	later.Advance(time.Hour + time.Minute)
	if rotated := sshdAuthorities(t, b); rotated[0] == before[0] {
		t.Fatalf("no rotation: %q", rotated)
	}

	dir := t.TempDir()
	identity := filepath.Join(dir, "id_ed25519")
	sshdKeygen(t, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "alice@stepup-test", "-f", identity)
	pubLine, err := os.ReadFile(identity + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	certLine := sshdIssue(t, a, tok.AccessToken, string(pubLine))
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(certLine))
	if err != nil {
		t.Fatal(err)
	}
	ca := authorizedLine(pub.(*ssh.Certificate).SignatureKey)
	if ca == before[0] || !slices.Contains(before, ca) {
		t.Fatalf("the certificate is signed by %q; want the CA listed as next before the rotation: %q", ca, before)
	}
	cert := identity + "-cert.pub"
	writeFile(t, cert, certLine+"\n")
	expectLogin(t, sshd, identity, cert, me.Username, "u_alice")
}

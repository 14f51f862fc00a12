package authz_test

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// certFor is POST /ssh for a fresh key; it fails the test unless a
// certificate comes back.
func certFor(t *testing.T, ts *testServer, token string) *ssh.Certificate {
	t.Helper()
	status, body := postSSH(t, ts, token, keyBody(userKey(t)))
	if status != http.StatusOK {
		t.Fatalf("POST /ssh: %d %v", status, body)
	}
	return parseCert(t, body["certificate"].(string))
}

func parseCert(t *testing.T, line string) *ssh.Certificate {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ssh.Certificate)
}

// revocations is GET /ssh/revoked.
type revocations struct {
	version  float64
	serials  map[uint64]bool
	tokenIDs map[string]bool
	etag     string
}

func fetchRevoked(t *testing.T, ts *testServer) revocations {
	t.Helper()
	status, hdr, body := call(t, "GET", ts.Issuer+"/ssh/revoked", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /ssh/revoked: %d %v", status, body)
	}
	r := revocations{serials: map[uint64]bool{}, tokenIDs: map[string]bool{}, etag: hdr.Get("ETag")}
	r.version, _ = body["version"].(float64)
	list, ok := body["revoked"].([]any)
	if !ok {
		t.Fatalf("GET /ssh/revoked without a revoked list: %v", body)
	}
	for _, e := range list {
		m := e.(map[string]any)
		s, err := strconv.ParseUint(m["serial"].(string), 10, 64)
		if err != nil {
			t.Fatalf("serial %v: %v", m["serial"], err)
		}
		r.serials[s] = true
		r.tokenIDs[m["token_id"].(string)] = true
		if exp, _ := m["expires_at"].(float64); exp <= 0 {
			t.Errorf("entry %v without expires_at", m)
		}
	}
	return r
}

// fetchKRL is GET /ssh/krl, written to a file.
func fetchKRL(t *testing.T, ts *testServer, path string) {
	t.Helper()
	resp, err := http.Get(ts.Issuer + "/ssh/krl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET /ssh/krl: %d %s %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// revokedByKRL asks the real ssh-keygen whether the KRL at krl revokes c.
func revokedByKRL(t *testing.T, keygen, krl string, c *ssh.Certificate) bool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cert.pub")
	writeFile(t, path, string(ssh.MarshalAuthorizedKey(c)))
	out, err := exec.Command(keygen, "-Q", "-f", krl, path).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil && strings.Contains(string(out), ": ok"):
		return false
	case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.Contains(string(out), "REVOKED"):
		return true
	}
	t.Fatalf("ssh-keygen -Q -f %s: %v\n%s", krl, err, out)
	return false
}

// TestCertificateRevocation: each way a person's authority ends revokes
// the certificates issued from it, and only those. GET /ssh/revoked lists
// them by serial and token id, and the real ssh-keygen -Q reads the same
// from GET /ssh/krl.
func TestCertificateRevocation(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	revokeToken := func(t *testing.T, ts *testServer, token, hint string) {
		t.Helper()
		status, body := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {token}, "token_type_hint": {hint}, "client_id": {cliClient}}, "", "")
		if status != http.StatusOK {
			t.Fatalf("revoking: %d %v", status, body)
		}
	}
	for _, tc := range []struct {
		name string
		// run makes certificates and then revokes some: those it returns
		// first, and not those it returns second.
		run func(t *testing.T, ts *testServer) (revoked, kept []*ssh.Certificate)
	}{
		{"ok/refresh-token-revoked", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			one, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			other, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			revoked := []*ssh.Certificate{certFor(t, ts, one.AccessToken), certFor(t, ts, one.AccessToken)}
			kept := []*ssh.Certificate{certFor(t, ts, other.AccessToken)}
			revokeToken(t, ts, one.RefreshToken, "refresh_token")
			return revoked, kept
		}},
		{"ok/access-token-revoked", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			one, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			other, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			revoked, kept := []*ssh.Certificate{certFor(t, ts, one.AccessToken)}, []*ssh.Certificate{certFor(t, ts, other.AccessToken)}
			revokeToken(t, ts, one.AccessToken, "access_token")
			return revoked, kept
		}},
		{"ok/refresh-token-reused", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			one, cfg := exchange(t, ts, newBrowser(t, ts.Issuer))
			other, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			first := certFor(t, ts, one.AccessToken)
			ts.Clock.Advance(time.Second)
			rotated, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: one.RefreshToken}).Token()
			if err != nil {
				t.Fatal(err)
			}
			second := certFor(t, ts, rotated.AccessToken)
			kept := certFor(t, ts, other.AccessToken)
			if _, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: one.RefreshToken}).Token(); oauthErrorOf(err) != "invalid_grant" {
				t.Fatalf("reuse: got %v, want invalid_grant", err)
			}
			return []*ssh.Certificate{first, second}, []*ssh.Certificate{kept}
		}},
		{"ok/signed-out", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			b := newBrowser(t, ts.Issuer)
			one, _ := exchange(t, ts, b)
			again, _ := exchange(t, ts, b) // the same session, a second grant
			revoked := []*ssh.Certificate{certFor(t, ts, one.AccessToken), certFor(t, ts, again.AccessToken)}
			// Another browser's session, a second later (auth_time is in
			// seconds), stays signed in.
			ts.Clock.Advance(1100 * time.Millisecond)
			other, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
			kept := []*ssh.Certificate{certFor(t, ts, other.AccessToken)}
			p := b.get(ts.Issuer + "/oauth2/logout?" + url.Values{"id_token_hint": {one.Extra("id_token").(string)}}.Encode())
			if p.StatusCode != http.StatusOK || !strings.Contains(p.Body, "You are signed out") {
				t.Fatalf("logout: %d %s", p.StatusCode, p.Body)
			}
			// The grants stay good, and so does a certificate asked for
			// after the sign-out (there is no rule against it).
			kept = append(kept, certFor(t, ts, one.AccessToken))
			return revoked, kept
		}},
		{"ok/mfa-turned-off", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			b := newBrowser(t, ts.Issuer)
			before, _ := exchange(t, ts, b) // password only
			secret, _ := enroll(t, ts, b)
			withOTP, _ := exchange(t, ts, b)
			if amr := amrOf(t, withOTP); !strings.Contains(strings.Join(amr, " "), "otp") {
				t.Fatalf("amr after enrolling: %v", amr)
			}
			revoked := []*ssh.Certificate{certFor(t, ts, before.AccessToken), certFor(t, ts, withOTP.AccessToken)}
			_, bob := loginAs(t, ts, "bob")
			kept := []*ssh.Certificate{certFor(t, ts, bob.AccessToken)}
			disableMFA(t, ts, b, secret)
			return revoked, kept
		}},
		{"ok/member-leaves", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			_, dave := loginAs(t, ts, "dave")
			_, carol := loginAs(t, ts, "carol")
			revoked, kept := []*ssh.Certificate{certFor(t, ts, dave.AccessToken)}, []*ssh.Certificate{certFor(t, ts, carol.AccessToken)}
			if status, body := callStatus(t, "DELETE", ts.Issuer+"/api/orgs/team/members/u_dave", dave.AccessToken, nil); status != http.StatusNoContent {
				t.Fatalf("dave leaving: %d %v", status, body)
			}
			return revoked, kept
		}},
		{"ok/member-removed", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			_, alice := loginAs(t, ts, "alice")
			_, dave := loginAs(t, ts, "dave")
			revoked, kept := []*ssh.Certificate{certFor(t, ts, dave.AccessToken)}, []*ssh.Certificate{certFor(t, ts, alice.AccessToken)}
			if status, body := callStatus(t, "DELETE", ts.Issuer+"/api/orgs/team/members/dave", alice.AccessToken, nil); status != http.StatusNoContent {
				t.Fatalf("removing dave: %d %v", status, body)
			}
			return revoked, kept
		}},
		{"ok/account-disabled", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			_, alice := loginAs(t, ts, "alice")
			_, dave := loginAs(t, ts, "dave")
			revoked, kept := []*ssh.Certificate{certFor(t, ts, dave.AccessToken)}, []*ssh.Certificate{certFor(t, ts, alice.AccessToken)}
			if status, _, body := call(t, "PATCH", ts.Issuer+"/api/admin/users/dave", alice.AccessToken, map[string]any{"disabled": true}); status != http.StatusOK {
				t.Fatalf("disabling dave: %d %v", status, body)
			}
			// Enabling the account again revokes nothing more.
			if status, _, body := call(t, "PATCH", ts.Issuer+"/api/admin/users/dave", alice.AccessToken, map[string]any{"disabled": false}); status != http.StatusOK {
				t.Fatalf("enabling dave: %d %v", status, body)
			}
			return revoked, kept
		}},
		{"ok/password-changed", func(t *testing.T, ts *testServer) ([]*ssh.Certificate, []*ssh.Certificate) {
			_, dave := loginAs(t, ts, "dave")
			_, carol := loginAs(t, ts, "carol")
			revoked, kept := []*ssh.Certificate{certFor(t, ts, dave.AccessToken)}, []*ssh.Certificate{certFor(t, ts, carol.AccessToken)}
			ts.Clock.Advance(1100 * time.Millisecond)
			if status, body := callStatus(t, "POST", ts.Issuer+"/api/me/password", dave.AccessToken,
				map[string]any{"current_password": alicePassword, "new_password": "long enough new one"}); status != http.StatusNoContent {
				t.Fatalf("changing dave's password: %d %v", status, body)
			}
			// A login with the new password gets a certificate at once:
			// the rule refuses only the logins the change ended.
			b := newBrowser(t, ts.Issuer)
			cfg := cliConfig(ts.Issuer, "53682")
			v := oauth2.GenerateVerifier()
			p := b.login(b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), "dave", "long enough new one")
			fresh, err := cfg.Exchange(bg, redirectOf(t, p).Query().Get("code"), oauth2.VerifierOption(v))
			if err != nil {
				t.Fatal(err)
			}
			return revoked, append(kept, certFor(t, ts, fresh.AccessToken))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(c *authz.Config) { withTeam(c); c.Admins = []string{"u_alice"} })
			empty := fetchRevoked(t, ts)
			if len(empty.serials) != 0 {
				t.Fatalf("a new server lists %v", empty.serials)
			}
			revoked, kept := tc.run(t, ts)
			got := fetchRevoked(t, ts)
			if got.version <= empty.version || got.etag == empty.etag {
				t.Errorf("version %v → %v, ETag %s → %s: want both to change", empty.version, got.version, empty.etag, got.etag)
			}
			krl := filepath.Join(t.TempDir(), "krl")
			fetchKRL(t, ts, krl)
			domain := strings.Split(strings.TrimPrefix(ts.Issuer, "http://"), ":")[0]
			for _, c := range revoked {
				_, jti, _ := sshca.ParseClaims(c, domain)
				if !got.serials[c.Serial] || !got.tokenIDs[jti] {
					t.Errorf("certificate %d (token %s) of %s is not listed: %v", c.Serial, jti, c.KeyId, got.serials)
				}
				if !revokedByKRL(t, keygen, krl, c) {
					t.Errorf("ssh-keygen -Q finds certificate %d of %s not revoked by the KRL", c.Serial, c.KeyId)
				}
			}
			for _, c := range kept {
				if got.serials[c.Serial] {
					t.Errorf("certificate %d of %s is listed, but nothing revoked it", c.Serial, c.KeyId)
				}
				if revokedByKRL(t, keygen, krl, c) {
					t.Errorf("ssh-keygen -Q finds certificate %d of %s revoked by the KRL", c.Serial, c.KeyId)
				}
			}
			if len(got.serials) != len(revoked) {
				t.Errorf("%d certificates listed, want %d", len(got.serials), len(revoked))
			}
		})
	}
}

// TestRevocationListPolling: both forms answer If-None-Match with 304 until
// the list changes, and a certificate leaves the list once it has expired.
func TestRevocationListPolling(t *testing.T) {
	ts := newTestServer(t, nil)
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	c := certFor(t, ts, tok.AccessToken)
	get := func(path, etag string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.Issuer+path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("ETag")
	}
	for _, path := range []string{"/ssh/revoked", "/ssh/krl"} {
		status, tag := get(path, "")
		if status != http.StatusOK || tag == "" {
			t.Fatalf("GET %s: %d, ETag %q", path, status, tag)
		}
		if status, _ := get(path, tag); status != http.StatusNotModified {
			t.Errorf("GET %s with its own ETag: %d, want 304", path, status)
		}
	}
	_, before := get("/ssh/revoked", "")
	status, body := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {tok.RefreshToken}, "client_id": {cliClient}}, "", "")
	if status != http.StatusOK {
		t.Fatalf("revoking: %d %v", status, body)
	}
	if status, _ := get("/ssh/revoked", before); status != http.StatusOK {
		t.Errorf("after a revocation, the old ETag still gets %d", status)
	}
	if got := fetchRevoked(t, ts); !got.serials[c.Serial] {
		t.Fatalf("the revoked certificate is not listed: %v", got.serials)
	}
	// Past its expiry (and the minute's grace for slow clocks) it is no
	// longer listed, and the ETag says the list changed.
	_, listed := get("/ssh/revoked", "")
	ts.Clock.Advance(time.Until(time.Unix(int64(c.ValidBefore), 0)) + 2*time.Minute)
	got := fetchRevoked(t, ts)
	if got.serials[c.Serial] || got.etag == listed {
		t.Errorf("after expiry: listed %v, ETag %s (was %s)", got.serials, got.etag, listed)
	}
}

// TestNoCertificateSlipsPastRevocation: certificates asked for while their
// grant is being revoked are either refused or listed, never handed out
// and forgotten. Each round revokes a grant while two clients keep asking
// with its token until they are refused.
func TestNoCertificateSlipsPastRevocation(t *testing.T) {
	for name, mutate := range revocationStores(t) {
		t.Run(name, func(t *testing.T) { noCertificateSlips(t, newTestServer(t, mutate)) })
	}
}

// revocationStores are memory, Redis, and a three-node Redis Cluster,
// where the ledgers and the list live in different slots.
func revocationStores(t *testing.T) map[string]func(*authz.Config) {
	all := stores(t)
	all["cluster"] = func(c *authz.Config) {
		testenv.Require(t, "redis-server", "redis-server")
		st, err := redis.New(redis.Config{URL: "redis://" + strings.Join(testenv.StartRedisCluster(t), ",")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		c.Store = st
	}
	return all
}

func noCertificateSlips(t *testing.T, ts *testServer) {
	var (
		mu     sync.Mutex
		issued []*ssh.Certificate
	)
	for range 5 {
		tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
		started := make(chan struct{}, 2)
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for i := 0; ; i++ {
					if i == 1 {
						started <- struct{}{}
					}
					status, body := postSSH(t, ts, tok.AccessToken, keyBody(userKey(t)))
					if status != http.StatusOK {
						if i == 0 {
							started <- struct{}{}
						}
						return
					}
					c := parseCert(t, body["certificate"].(string))
					mu.Lock()
					issued = append(issued, c)
					mu.Unlock()
				}
			})
		}
		<-started
		<-started
		status, body := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {tok.RefreshToken}, "client_id": {cliClient}}, "", "")
		if status != http.StatusOK {
			t.Fatalf("revoking: %d %v", status, body)
		}
		wg.Wait()
	}
	got := fetchRevoked(t, ts)
	for _, c := range issued {
		if !got.serials[c.Serial] {
			t.Errorf("certificate %d was handed out and is not listed", c.Serial)
		}
	}
	t.Logf("%d certificates issued around 5 revocations, all listed", len(issued))
}

// TestRevokedCertificateRefusedByRealSSHD: an OpenSSH server whose
// RevokedKeys is the KRL from GET /ssh/krl lets the certificate in until
// its grant is revoked (as stepup logout does), and refuses it once the
// KRL is fetched again; sshd's log names the KRL.
func TestRevokedCertificateRefusedByRealSSHD(t *testing.T) {
	keygen := testenv.Require(t, "ssh-keygen", "openssh-client")
	testenv.Require(t, "ssh", "openssh-client")
	sshd := testenv.RequireSSHD(t)
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	me := u.Username
	ts := newTestServer(t, nil)
	tok, _ := exchange(t, ts, newBrowser(t, ts.Issuer))
	other, _ := exchange(t, ts, newBrowser(t, ts.Issuer))

	dir := t.TempDir()
	key := func(name string) (identity, cert string) {
		identity = filepath.Join(dir, name, "id_ed25519")
		if err := os.MkdirAll(filepath.Dir(identity), 0o700); err != nil {
			t.Fatal(err)
		}
		sshdKeygen(t, keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", identity)
		return identity, identity + "-cert.pub"
	}
	revokedKey, revokedCert := key("revoked")
	keptKey, keptCert := key("kept")
	for _, k := range []struct{ identity, cert, token string }{{revokedKey, revokedCert, tok.AccessToken}, {keptKey, keptCert, other.AccessToken}} {
		pub, err := os.ReadFile(k.identity + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, k.cert, sshdIssue(t, ts, k.token, string(pub))+"\n")
	}

	// testenv's sshd takes its configuration whole; RevokedKeys comes in
	// on the command line, through a wrapper it runs as its sshd. sshd
	// re-executes itself for each connection with the same arguments.
	krl := filepath.Join(dir, "revoked.krl")
	fetchKRL(t, ts, krl)
	wrapper := filepath.Join(dir, "sshd")
	writeFile(t, wrapper, "#!/bin/sh\nexec "+sshd+" -o RevokedKeys="+krl+" \"$@\"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(testenv.SSHDEnv, wrapper)
	addr := testenv.StartSSHD(t, strings.Join(sshdAuthorities(t, ts), "\n"))

	expectLogin(t, addr, revokedKey, revokedCert, me, "u_alice")
	status, body := postForm(t, ts.Issuer+"/oauth2/revoke", url.Values{"token": {tok.RefreshToken}, "client_id": {cliClient}}, "", "")
	if status != http.StatusOK {
		t.Fatalf("revoking: %d %v", status, body)
	}
	// sshd reads the file at each authentication: the one fetched before
	// still lets the certificate in, the one fetched now does not.
	expectLogin(t, addr, revokedKey, revokedCert, me, "u_alice")
	fetchKRL(t, ts, krl)
	line := expectRefusal(t, addr, revokedKey, revokedCert, me, "u_alice", `revoked by file `+regexp.QuoteMeta(krl))
	t.Logf("sshd: %s", line)
	expectLogin(t, addr, keptKey, keptCert, me, "u_alice")
}

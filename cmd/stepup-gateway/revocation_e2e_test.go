package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/internal/testserver"
)

// TestGatewayRevocation runs the built gateway against a real Stepup
// server and the real ssh: a certificate works, then what it came from
// ends (alice signs out in her browser; bob is removed from the
// organization), and the same certificate is refused within the
// gateway's refresh interval, with the reason in the banner ssh prints.
func TestGatewayRevocation(t *testing.T) {
	testenv.Require(t, "ssh", "openssh-client")
	testenv.Require(t, "ssh-keygen", "openssh-client")
	hash, err := authz.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	// team requires nothing, so that what refuses is the revocation.
	issuer := testserver.Start(t, authz.Config{
		Clients: []authz.Client{
			{ID: cliID, Public: true, RedirectURIs: []string{"http://127.0.0.1/callback"},
				GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
				Scopes: []string{"openid", "offline_access", "profile", "email"}, TokenEndpointAuthMethod: "none"},
			{ID: gatewayID, SecretHash: authz.HashClientSecret(gatewaySecret), GrantTypes: []string{"client_credentials"},
				Scopes: []string{"access.read"}, TokenEndpointAuthMethod: "client_secret_basic"},
		},
		Users: []authz.User{
			{ID: "u_alice", Username: "alice", Email: "alice@example.com", PasswordHash: hash, EmailVerified: true},
			{ID: "u_bob", Username: "bob", Email: "bob@example.com", PasswordHash: hash, EmailVerified: true},
		},
		Orgs: []authz.Org{{ID: "team", Name: "Team", Members: []authz.Member{{UserID: "u_alice", Role: "owner"}, {UserID: "u_bob", Role: "member"}}}},
	})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "stepup.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("services:\n  - id: %s\n    org: team\ngateway: {client_id: %s, client_secret: %q}\n",
		service, gatewayID, gatewaySecret)), 0o600); err != nil {
		t.Fatal(err)
	}
	const refresh = 200 * time.Millisecond
	port := strconv.Itoa(testenv.FreePort(t))
	gw := startGateway(t, "--issuer", issuer, "--config", cfgPath, "--ssh-addr", "127.0.0.1:"+port,
		"--host-key", newKey(t, dir, "host"), "--git-root", filepath.Join(dir, "repos"),
		"--revocation-refresh", refresh.String(), "--revocation-max-age", (10 * refresh).String())

	// refusedWithin runs ssh with key until the gateway refuses it at
	// authentication, for at most 50 refresh intervals (10 s at least, for a
	// busy machine), and returns what ssh printed. ssh shows the banner at
	// its default log level, not at the ERROR the other tests quieten it to.
	refusedWithin := func(t *testing.T, key string) result {
		t.Helper()
		opts := slices.Clone(sshOptions(port, key))
		opts[slices.Index(opts, "LogLevel=ERROR")] = "LogLevel=INFO"
		wait := max(50*refresh, 10*time.Second)
		deadline := time.Now().Add(wait)
		for {
			got := sshWith(t, opts, service, "whoami")
			if got.code == 255 {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("still admitted %v after the revocation: %#v\ngateway log:\n%s", wait, got, gw.output())
			}
			time.Sleep(refresh)
		}
	}
	revokedBanner := func(username, userID string) string {
		return "Error: This SSH certificate has been revoked.\nService: " + service + "\nUser: " + username + " (" + userID + ")\n" +
			"Detail: Log in again for a new certificate: stepup login\n"
	}

	t.Run("fail/signed-out", func(t *testing.T) {
		alice := newBrowser(t, issuer)
		key := newKey(t, dir, "alice")
		certify(t, issuer, alice.login("alice", ""), key)
		if got := sshRun(t, port, key, service, "whoami"); got != (result{"alice " + service + "\n", "", 0}) {
			t.Fatalf("before signing out: %#v", got)
		}
		// Sign out as a person does: the page asks, the form confirms.
		_, page := alice.send(http.MethodGet, issuer+"/oauth2/logout", nil)
		if _, page = alice.send(http.MethodPost, issuer+"/oauth2/logout", fields(page)); !strings.Contains(page, "You are signed out") {
			t.Fatalf("signing out: %s", page)
		}
		got := refusedWithin(t, key)
		if !strings.Contains(got.stderr, revokedBanner("alice", "u_alice")) || !strings.Contains(got.stderr, "Permission denied (publickey)") {
			t.Errorf("ssh said:\n%s\nwant the banner:\n%s", got.stderr, revokedBanner("alice", "u_alice"))
		}
		// A new login gets a certificate that works.
		certify(t, issuer, newBrowser(t, issuer).login("alice", ""), key)
		if got := sshRun(t, port, key, service, "whoami"); got.code != 0 {
			t.Errorf("after logging in again: %#v", got)
		}
	})

	t.Run("fail/removed-from-the-organization", func(t *testing.T) {
		key := newKey(t, dir, "bob")
		certify(t, issuer, newBrowser(t, issuer).login("bob", ""), key)
		if got := sshRun(t, port, key, service, "whoami"); got != (result{"bob " + service + "\n", "", 0}) {
			t.Fatalf("before the removal: %#v", got)
		}
		owner := newBrowser(t, issuer).login("alice", "")
		req, _ := http.NewRequest(http.MethodDelete, issuer+"/api/orgs/team/members/u_bob", nil)
		req.Header.Set("Authorization", "Bearer "+owner)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("removing bob: %d %s", resp.StatusCode, body.String())
		}
		// The gateway reuses access answers for 30 s; the revocation list
		// takes effect long before.
		got := refusedWithin(t, key)
		if !strings.Contains(got.stderr, revokedBanner("bob", "u_bob")) {
			t.Errorf("ssh said:\n%s\nwant the banner:\n%s", got.stderr, revokedBanner("bob", "u_bob"))
		}
		if !strings.Contains(gw.output(), "serial") {
			t.Errorf("the gateway's log does not name the refused certificate's serial:\n%s", gw.output())
		}
	})
}

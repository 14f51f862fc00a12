package authz_test

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// TestRedisCommandsPerOperation counts, on a real redis-server, what each
// operation costs: round trips (seen by a go-redis hook: a command, a
// script or a pipeline each count once) and the commands Redis executed
// (its own INFO commandstats, reset before each batch; commands run inside
// a Lua script count too). It prints the table BENCHMARKS.md shows
// (go test ./authz -run TestRedisCommandsPerOperation -v) and pins the
// token endpoint's round trips, which must not grow with fosite's calls.
func TestRedisCommandsPerOperation(t *testing.T) {
	testenv.Require(t, "redis-server", "redis-server")
	addr := testenv.StartRedis(t)
	st, err := redis.New(redis.Config{URL: "redis://" + addr + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	var trips atomic.Int64
	st.AddHook(roundTrips{&trips})
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { _ = admin.Close() })

	ts := newTestServer(t, func(c *authz.Config) { c.Store = st })
	cfg := cliConfig(ts.Issuer, "53682")
	cc := &clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: ts.Issuer + "/oauth2/token"}
	login := func() (*oauth2.Token, error) {
		v := oauth2.GenerateVerifier()
		back := newBrowser(t, ts.Issuer).authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
		return cfg.Exchange(bg, back.Query().Get("code"), oauth2.VerifierOption(v))
	}
	const n = 20
	// bob has an authenticator app, so his browser login asks for a code
	// after the password. Each of his logins moves the clock a time step
	// on, as a code works once; it starts far enough back that it never
	// passes the real time, which fosite's checks of auth_time use.
	ts.Clock.Advance(-(n + 2) * 30 * time.Second)
	hb, _ := loginAs(t, ts, "bob")
	bobSecret, _ := enroll(t, ts, hb)
	// The state each measured operation starts from is made outside the
	// measurement.
	var (
		codes    []string
		verifier = oauth2.GenerateVerifier()
		tokens   []*oauth2.Token
		key      = strings.TrimSpace(userKey(t))
	)
	type operation struct {
		name  string
		setup func() // once per run, not measured
		run   func() error
		// maxTrips bounds the round trips; 0 only reports.
		maxTrips float64
	}
	ops := []operation{
		{name: "client_credentials", run: func() error { _, err := cc.Token(bg); return err }, maxTrips: 1},
		{name: "code exchange (authorization_code)", maxTrips: 2,
			setup: func() {
				back := newBrowser(t, ts.Issuer).authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
				codes = append(codes, back.Query().Get("code"))
			},
			run: func() error {
				c := codes[0]
				codes = codes[1:]
				tok, err := cfg.Exchange(bg, c, oauth2.VerifierOption(verifier))
				tokens = append(tokens, tok)
				return err
			}},
		// Three: the family read, the person read (a disabled person, or
		// one whose password changed since the login, may not refresh),
		// and the family write.
		{name: "refresh_token", maxTrips: 3, run: func() error {
			tok, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tokens[0].RefreshToken}).Token()
			if err == nil {
				tokens[0] = tok
			}
			return err
		}},
		{name: "introspection (JWT access token)", run: func() error {
			status, body := postForm(t, ts.Issuer+"/oauth2/introspect", url.Values{"token": {tokens[0].AccessToken}}, svcClient, svcSecret)
			if status != 200 || body["active"] != true {
				return fmt.Errorf("introspection: %d %v", status, body)
			}
			return nil
		}},
		{name: "POST /ssh", run: func() error {
			if status, body := postSSH(t, ts, tokens[0].AccessToken, []byte(`{"key":"`+key+`"}`)); status != 200 {
				return fmt.Errorf("POST /ssh: %d %v", status, body)
			}
			return nil
		}},
		// Eight: the authorization's one, the login page's one, the
		// password's three (see TestStoreCallsPerLogin) and the grant's
		// write, and the exchange's two.
		{name: "browser login (authorize, password, code exchange)", maxTrips: 8, run: func() error { _, err := login(); return err }},
		// From the first authorization request to the redirect with the
		// code: the store calls TestStoreCallsPerLogin counts, one round
		// trip each.
		{name: "browser login with password and TOTP (authorize to code)", maxTrips: 9, run: func() error {
			ts.Clock.Advance(30 * time.Second)
			b := newBrowser(t, ts.Issuer)
			p := b.login(b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))), "bob", alicePassword)
			p = submitCode(b, p, code(t, bobSecret, ts.Clock.Now()))
			if redirectOf(t, p).Query().Get("code") == "" {
				return fmt.Errorf("no code: %d %s", p.StatusCode, p.Request.URL)
			}
			return nil
		}},
	}

	// One of each first: keys created, scripts loaded.
	for _, op := range ops {
		if op.setup != nil {
			op.setup()
		}
		if err := op.run(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
	}
	var report strings.Builder
	fmt.Fprintf(&report, "| operation | round trips | Redis commands | by command |\n|---|---|---|---|\n")
	for _, op := range ops {
		if op.setup != nil {
			for range n {
				op.setup()
			}
		}
		if err := admin.ConfigResetStat(bg).Err(); err != nil {
			t.Fatal(err)
		}
		before := trips.Load()
		for range n {
			if err := op.run(); err != nil {
				t.Fatalf("%s: %v", op.name, err)
			}
		}
		rt := float64(trips.Load()-before) / n
		cmds := commandStats(t, admin)
		total := 0
		var by []string
		for _, name := range slices.Sorted(maps.Keys(cmds)) {
			total += cmds[name]
			by = append(by, fmt.Sprintf("%s %.3g", name, float64(cmds[name])/n))
		}
		fmt.Fprintf(&report, "| %s | %.3g | %.3g | %s |\n", op.name, rt, float64(total)/n, strings.Join(by, ", "))
		if op.maxTrips > 0 && rt > op.maxTrips {
			t.Errorf("%s: %.3g round trips each, want at most %g", op.name, rt, op.maxTrips)
		}
	}
	t.Logf("Redis commands per operation (mean of %d):\n%s", n, report.String())
}

// commandStats reads INFO commandstats: calls per command since the last
// CONFIG RESETSTAT, leaving out the INFO and CONFIG of this measurement.
func commandStats(t *testing.T, rdb *goredis.Client) map[string]int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || name == "info" || strings.HasPrefix(name, "config") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.Atoi(calls)
		if err != nil {
			t.Fatalf("commandstats line %q", line)
		}
		out[name] = n
	}
	return out
}

// roundTrips counts what go-redis sends: a command, or a whole pipeline.
type roundTrips struct{ n *atomic.Int64 }

func (roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

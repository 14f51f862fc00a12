package authz_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage"
)

// countingStore counts store calls; with Redis each is one round trip.
// It also keeps a trace of them (op, namespace or group, key, and the
// first caller in package authz), which the login test prints with -v.
type countingStore struct {
	storage.Store
	calls atomic.Int64

	mu    sync.Mutex
	trace []string
}

func (c *countingStore) note(op, ns string, keys ...string) {
	c.calls.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if op == "Batch" {
		c.trace = append(c.trace, fmt.Sprintf("%3d  Batch from %s", c.calls.Load(), caller()))
		for _, k := range keys {
			c.trace = append(c.trace, "       "+k)
		}
		return
	}
	c.trace = append(c.trace, fmt.Sprintf("%3d  %-12s %-16s %-40.40s %s", c.calls.Load(), op, ns, strings.Join(keys, ","), caller()))
}

// mark notes a line in the trace without counting it.
func (c *countingStore) mark(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trace = append(c.trace, line)
}

func (c *countingStore) lines() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.trace, "\n")
}

// caller is the innermost function of package authz (not its tests, not
// the store) on the stack: where a store call comes from.
func caller() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "github.com/stepup-dev/stepup/authz.") && !strings.HasSuffix(f.File, "_test.go") {
			return strings.TrimPrefix(f.Function, "github.com/stepup-dev/stepup/authz.") + " " + filepath.Base(f.File) + ":" + strconv.Itoa(f.Line)
		}
		if !more {
			return "?"
		}
	}
}

func (c *countingStore) Get(ctx context.Context, ns, key string) ([]byte, error) {
	c.note("Get", ns, key)
	return c.Store.Get(ctx, ns, key)
}
func (c *countingStore) Put(ctx context.Context, ns, key string, v []byte, ttl time.Duration) error {
	c.note("Put", ns, key)
	return c.Store.Put(ctx, ns, key, v, ttl)
}
func (c *countingStore) Create(ctx context.Context, ns, key string, v []byte, ttl time.Duration) error {
	c.note("Create", ns, key)
	return c.Store.Create(ctx, ns, key, v, ttl)
}
func (c *countingStore) Take(ctx context.Context, ns, key string) ([]byte, error) {
	c.note("Take", ns, key)
	return c.Store.Take(ctx, ns, key)
}
func (c *countingStore) Delete(ctx context.Context, ns, key string) error {
	c.note("Delete", ns, key)
	return c.Store.Delete(ctx, ns, key)
}
func (c *countingStore) Incr(ctx context.Context, ns, key string, window time.Duration) (int64, error) {
	c.note("Incr", ns, key)
	return c.Store.Incr(ctx, ns, key, window)
}
func (c *countingStore) Update(ctx context.Context, ns, key string, ttl time.Duration, fn func([]byte) ([]byte, error)) error {
	c.note("Update", ns, key)
	return c.Store.Update(ctx, ns, key, ttl, fn)
}
func (c *countingStore) LoadFamily(ctx context.Context, f string) (map[string]storage.Entry, error) {
	c.note("LoadFamily", "", f)
	return c.Store.LoadFamily(ctx, f)
}
func (c *countingStore) ApplyFamily(ctx context.Context, f string, exp time.Time, ops ...storage.Op) error {
	c.note("ApplyFamily", "", f)
	return c.Store.ApplyFamily(ctx, f, exp, ops...)
}

func (c *countingStore) GetMany(ctx context.Context, ns string, keys ...string) ([][]byte, error) {
	c.note("GetMany", ns, keys...)
	return c.Store.GetMany(ctx, ns, keys...)
}
func (c *countingStore) GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error) {
	c.note("GetRecords", group, names...)
	return c.Store.GetRecords(ctx, group, names...)
}
func (c *countingStore) ApplyRecords(ctx context.Context, group string, ops ...storage.RecordOp) error {
	names := make([]string, len(ops))
	for i, op := range ops {
		names[i] = op.Name
	}
	c.note("ApplyRecords", group, names...)
	return c.Store.ApplyRecords(ctx, group, ops...)
}
func (c *countingStore) Follow(ctx context.Context, group, name, prefix string) ([]byte, []byte, error) {
	c.note("Follow", group, name)
	return c.Store.Follow(ctx, group, name, prefix)
}
func (c *countingStore) ScanIndex(ctx context.Context, group, index, after string, limit int) ([]string, error) {
	c.note("ScanIndex", group, index)
	return c.Store.ScanIndex(ctx, group, index, after, limit)
}
func (c *countingStore) IndexSize(ctx context.Context, group, index string) (int64, error) {
	c.note("IndexSize", group, index)
	return c.Store.IndexSize(ctx, group, index)
}

// Batch is one call, as it is one round trip; its ops are listed.
func (c *countingStore) Batch(ctx context.Context, ops ...storage.BatchOp) ([]storage.BatchResult, error) {
	var names []string
	for _, op := range ops {
		name := op.NS + "/" + op.Key
		switch op.Kind {
		case storage.BatchGetRecords:
			name = op.Group + "/" + strings.Join(op.Names, "+")
		case storage.BatchFollow:
			name = op.Group + "/" + op.Names[0] + " to " + op.Prefix
		case storage.BatchApplyFamily:
			name = "family " + op.Family[:8]
		}
		names = append(names, batchKinds[op.Kind]+" "+name)
	}
	c.note("Batch", "", names...)
	return c.Store.(storage.Batcher).Batch(ctx, ops...)
}

var batchKinds = map[storage.BatchKind]string{
	storage.BatchGet: "get", storage.BatchPut: "put", storage.BatchCreate: "create", storage.BatchTake: "take",
	storage.BatchDelete: "delete", storage.BatchIncr: "incr", storage.BatchSwap: "swap",
	storage.BatchGetRecords: "records", storage.BatchApplyFamily: "apply", storage.BatchFollow: "follow",
}

// tracing marks each request a browser sends in the store's trace.
type tracing struct {
	cs   *countingStore
	next http.RoundTripper
}

func (t tracing) RoundTrip(r *http.Request) (*http.Response, error) {
	t.cs.mark("--- " + r.Method + " " + r.URL.Path)
	return t.next.RoundTrip(r)
}

// TestStoreCallsPerGrant pins the batching of the fosite adapter: fosite
// makes about ten storage calls per code exchange; Stepup turns them into
// one read and one write of the grant's family (and a refresh reads the
// person too).
func TestStoreCallsPerGrant(t *testing.T) {
	var cs *countingStore
	ts := newTestServer(t, func(c *authz.Config) {
		cs = &countingStore{Store: c.Store}
		c.Store = cs
	})
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")
	// Warm the key cache so that it does not count below.
	if _, err := (&clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: ts.Issuer + "/oauth2/token"}).Token(bg); err != nil {
		t.Fatal(err)
	}
	v := oauth2.GenerateVerifier()
	code := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))).Query().Get("code")

	measure := func(name string, want int64, fn func()) {
		t.Helper()
		before := cs.calls.Load()
		fn()
		if got := cs.calls.Load() - before; got != want {
			t.Errorf("%s: %d store calls, want %d", name, got, want)
		}
	}
	var tok *oauth2.Token
	measure("code exchange", 2, func() {
		var err error
		if tok, err = cfg.Exchange(bg, code, oauth2.VerifierOption(v)); err != nil {
			t.Fatal(err)
		}
	})
	// The family's read and write, and the person's read: a disabled
	// person, or one whose password changed since, may not refresh.
	measure("refresh", 3, func() {
		if _, err := cfg.TokenSource(bg, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
			t.Fatal(err)
		}
	})
	measure("client_credentials", 1, func() {
		if _, err := (&clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: ts.Issuer + "/oauth2/token"}).Token(bg); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStoreCallsPerLogin pins what a browser login with a password and a
// code costs the store, from the first authorization request to the
// redirect with the code. It was 38 calls (35 as this test counted them
// before Incr was counted); issue 17 aimed at 8. A request keeps what it
// read (requestcache.go), reads together what it can, and writes what
// can wait with its next round trip (one storage.Batch each), so the 9
// calls left are the ones that must wait for the one before:
//
//   - GET /oauth2/authorize (1): the pending authorization's write, with
//     the per-address count that admits it.
//   - GET /login (1): the pending authorization.
//   - POST /login (3): the pending authorization with the throttle's
//     address and account counters; the attempt's count (after the
//     address's check, before the password's) with the directory's
//     username entry and the person's record it names, read together
//     (storage.Records.Follow); then the session's write and the attempt
//     count's clearing, with the enrollment and passkeys that say the
//     code comes next.
//   - GET /login/otp (1): the pending authorization, the session, the
//     enrollment and the person, whom the session cookie names.
//   - POST /login/otp (3): the same with the address's count of wrong
//     codes; the code's check, one compare-and-swap of the enrollment that
//     counts the attempt and uses the code up, which one request wins;
//     then the new session (and the old one's removal), the pending
//     authorization's removal and the grant, one write of its family.
//
// With -v it prints each call, the request it belongs to and where in
// package authz it comes from.
func TestStoreCallsPerLogin(t *testing.T) {
	var cs *countingStore
	ts := newTestServer(t, func(c *authz.Config) {
		cs = &countingStore{Store: c.Store}
		c.Store = cs
	})
	hb, _ := loginAs(t, ts, "alice")
	secret, _ := enroll(t, ts, hb)
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	b := newBrowser(t, ts.Issuer)
	b.client.Transport = tracing{cs: cs, next: b.client.Transport}
	before := cs.calls.Load()
	cs.mark("=== the login starts")
	p := b.login(b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), "alice", alicePassword)
	p = submitCode(b, p, code(t, secret, ts.Clock.Now().Add(30*time.Second)))
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatalf("no code: %d %s", p.StatusCode, p.Request.URL)
	}
	t.Logf("store calls:\n%s", cs.lines())
	if got := cs.calls.Load() - before; got != 9 {
		t.Errorf("a browser login with password and code: %d store calls, want 9", got)
	}
	// The same browser again, signed in: one read (the session, the
	// person its cookie names, the enrollment) and the grant's write.
	before = cs.calls.Load()
	cs.mark("=== signed in")
	if redirectOf(t, b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))).Query().Get("code") == "" {
		t.Fatal("no code for a signed-in browser")
	}
	if got := cs.calls.Load() - before; got != 2 {
		t.Errorf("an authorization from a signed-in browser: %d store calls, want 2\n%s", got, cs.lines())
	}
}

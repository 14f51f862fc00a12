package authz_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage"
)

// countingStore counts store calls; with Redis each is one round trip.
type countingStore struct {
	storage.Store
	calls atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, ns, key string) ([]byte, error) {
	c.calls.Add(1)
	return c.Store.Get(ctx, ns, key)
}
func (c *countingStore) Put(ctx context.Context, ns, key string, v []byte, ttl time.Duration) error {
	c.calls.Add(1)
	return c.Store.Put(ctx, ns, key, v, ttl)
}
func (c *countingStore) Delete(ctx context.Context, ns, key string) error {
	c.calls.Add(1)
	return c.Store.Delete(ctx, ns, key)
}
func (c *countingStore) Update(ctx context.Context, ns, key string, ttl time.Duration, fn func([]byte) ([]byte, error)) error {
	c.calls.Add(1)
	return c.Store.Update(ctx, ns, key, ttl, fn)
}
func (c *countingStore) LoadFamily(ctx context.Context, f string) (map[string]storage.Entry, error) {
	c.calls.Add(1)
	return c.Store.LoadFamily(ctx, f)
}
func (c *countingStore) ApplyFamily(ctx context.Context, f string, exp time.Time, ops ...storage.Op) error {
	c.calls.Add(1)
	return c.Store.ApplyFamily(ctx, f, exp, ops...)
}

func (c *countingStore) GetMany(ctx context.Context, ns string, keys ...string) ([][]byte, error) {
	c.calls.Add(1)
	return c.Store.GetMany(ctx, ns, keys...)
}
func (c *countingStore) GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error) {
	c.calls.Add(1)
	return c.Store.GetRecords(ctx, group, names...)
}
func (c *countingStore) ApplyRecords(ctx context.Context, group string, ops ...storage.RecordOp) error {
	c.calls.Add(1)
	return c.Store.ApplyRecords(ctx, group, ops...)
}
func (c *countingStore) ScanIndex(ctx context.Context, group, index, after string, limit int) ([]string, error) {
	c.calls.Add(1)
	return c.Store.ScanIndex(ctx, group, index, after, limit)
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
// redirect with the code: 35 calls today (throttle counters, the pending
// authorization, the session, the directory, the enrollment, passkeys,
// the code's grant). Issue 17 aims at 8; this pins the way there.
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
	before := cs.calls.Load()
	p := b.login(b.get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), "alice", alicePassword)
	p = submitCode(b, p, code(t, secret, ts.Clock.Now().Add(30*time.Second)))
	if redirectOf(t, p).Query().Get("code") == "" {
		t.Fatalf("no code: %d %s", p.StatusCode, p.Request.URL)
	}
	if got := cs.calls.Load() - before; got != 35 {
		t.Errorf("a browser login with password and code: %d store calls, want 35", got)
	}
}

package authz_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage"
)

// flakyStore fails every operation with ErrUnavailable while down is set,
// as a store whose server has gone away does.
type flakyStore struct {
	storage.Store
	down atomic.Bool
}

func (f *flakyStore) fail() error {
	if f.down.Load() {
		return fmt.Errorf("%w: connection refused", storage.ErrUnavailable)
	}
	return nil
}

func (f *flakyStore) Get(ctx context.Context, ns, key string) ([]byte, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.Get(ctx, ns, key)
}
func (f *flakyStore) Put(ctx context.Context, ns, key string, v []byte, ttl time.Duration) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Put(ctx, ns, key, v, ttl)
}
func (f *flakyStore) Create(ctx context.Context, ns, key string, v []byte, ttl time.Duration) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Create(ctx, ns, key, v, ttl)
}
func (f *flakyStore) Take(ctx context.Context, ns, key string) ([]byte, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.Take(ctx, ns, key)
}
func (f *flakyStore) Delete(ctx context.Context, ns, key string) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Delete(ctx, ns, key)
}
func (f *flakyStore) Incr(ctx context.Context, ns, key string, w time.Duration) (int64, error) {
	if err := f.fail(); err != nil {
		return 0, err
	}
	return f.Store.Incr(ctx, ns, key, w)
}
func (f *flakyStore) Update(ctx context.Context, ns, key string, ttl time.Duration, fn func([]byte) ([]byte, error)) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Update(ctx, ns, key, ttl, fn)
}
func (f *flakyStore) LoadFamily(ctx context.Context, fam string) (map[string]storage.Entry, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.LoadFamily(ctx, fam)
}
func (f *flakyStore) ApplyFamily(ctx context.Context, fam string, exp time.Time, ops ...storage.Op) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.ApplyFamily(ctx, fam, exp, ops...)
}
func (f *flakyStore) GetMany(ctx context.Context, ns string, keys ...string) ([][]byte, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.GetMany(ctx, ns, keys...)
}
func (f *flakyStore) GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.GetRecords(ctx, group, names...)
}
func (f *flakyStore) ApplyRecords(ctx context.Context, group string, ops ...storage.RecordOp) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.ApplyRecords(ctx, group, ops...)
}
func (f *flakyStore) ScanIndex(ctx context.Context, group, index, after string, limit int) ([]string, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Store.ScanIndex(ctx, group, index, after, limit)
}
func (f *flakyStore) IndexSize(ctx context.Context, group, index string) (int64, error) {
	if err := f.fail(); err != nil {
		return 0, err
	}
	return f.Store.IndexSize(ctx, group, index)
}
func (f *flakyStore) Ping(ctx context.Context) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Ping(ctx)
}

func TestStoreOutageAnswers503AndLosesNothing(t *testing.T) {
	var flaky *flakyStore
	ts := newTestServer(t, func(c *authz.Config) {
		flaky = &flakyStore{Store: c.Store}
		c.Store = flaky
	})
	b := newBrowser(t, ts.Issuer)
	cfg := cliConfig(ts.Issuer, "53682")
	v := oauth2.GenerateVerifier()
	back := b.authorize(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	code := back.Query().Get("code")

	flaky.down.Store(true)
	_, err := cfg.Exchange(bg, code, oauth2.VerifierOption(v))
	var re *oauth2.RetrieveError
	if !asRetrieve(err, &re) || re.Response.StatusCode != http.StatusServiceUnavailable || re.ErrorCode != "temporarily_unavailable" || re.ErrorDescription == "" {
		t.Fatalf("exchange during an outage: %v, want 503 temporarily_unavailable with a description", err)
	}
	for _, path := range []string{"/readyz", "/.well-known/openid-configuration", "/healthz"} {
		resp, err := http.Get(ts.Issuer + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusOK
		if path == "/readyz" {
			want = http.StatusServiceUnavailable
		}
		if resp.StatusCode != want {
			t.Errorf("%s during an outage: %d, want %d", path, resp.StatusCode, want)
		}
	}
	p := newBrowser(t, ts.Issuer).get(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
	if p.StatusCode != http.StatusServiceUnavailable || !strings.Contains(p.Body, "try again") {
		t.Errorf("authorize during an outage: %d %s", p.StatusCode, p.Body)
	}

	// Back up: the code was not spent by the failed attempt.
	flaky.down.Store(false)
	if _, err := cfg.Exchange(bg, code, oauth2.VerifierOption(v)); err != nil {
		t.Fatalf("the code did not survive the outage: %v", err)
	}
}

func asRetrieve(err error, re **oauth2.RetrieveError) bool {
	r, ok := err.(*oauth2.RetrieveError)
	if ok {
		*re = r
	}
	return ok
}

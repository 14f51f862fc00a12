package authz_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage"
)

// TestSessionCookieNamesNobodyElse: the person's id in the session cookie
// only lets the person's record be read along with the session; a cookie
// that names someone else still signs in the session's own person.
func TestSessionCookieNamesNobodyElse(t *testing.T) {
	ts := newTestServer(t, nil)
	b, _ := loginAs(t, ts, "alice")
	u, _ := url.Parse(ts.Issuer)
	name := "stepup_session_" + port(t, ts.Issuer)
	var forged *http.Cookie
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == name {
			id, _, ok := strings.Cut(c.Value, ".")
			if !ok {
				t.Fatalf("session cookie %q names nobody", c.Value)
			}
			forged = &http.Cookie{Name: name, Value: id + "." + base64.RawURLEncoding.EncodeToString([]byte("u_bob")), Path: "/"}
		}
	}
	if forged == nil {
		t.Fatal("no session cookie")
	}
	b.client.Jar.SetCookies(u, []*http.Cookie{forged})
	tok, _ := exchange(t, ts, b)
	if _, claims := jwtParts(t, tok.AccessToken); claims["sub"] != "u_alice" {
		t.Fatalf("a cookie naming u_bob gave a token for %v, want u_alice", claims["sub"])
	}
}

// batchFailer is a store whose batches fail, changing nothing, while
// failing holds; every other call works.
type batchFailer struct {
	storage.Store
	failing atomic.Bool
}

func (f *batchFailer) Batch(ctx context.Context, ops ...storage.BatchOp) ([]storage.BatchResult, error) {
	grant := false
	for _, op := range ops {
		grant = grant || op.Kind == storage.BatchApplyFamily
	}
	if grant && f.failing.Load() {
		err := fmt.Errorf("%w: connection reset", storage.ErrUnavailable)
		res := make([]storage.BatchResult, len(ops))
		for i := range res {
			res[i].Err = err
		}
		return res, err
	}
	return f.Store.(storage.Batcher).Batch(ctx, ops...)
}

// TestLoginsLastWriteFails: when the round trip that writes the session
// and the grant fails, the answer is 503 without a code; the session the
// password made still stands, and the next code signs in.
func TestLoginsLastWriteFails(t *testing.T) {
	var st *batchFailer
	ts := newTestServer(t, func(c *authz.Config) {
		st = &batchFailer{Store: c.Store}
		c.Store = st
	})
	// The second code is a time step later; the clock starts behind, as
	// fosite checks auth_time against the real time.
	ts.Clock.Advance(-time.Minute)
	hb, _ := loginAs(t, ts, "alice")
	secret, _ := enroll(t, ts, hb)
	b, p, verifier := passwordThenOTP(t, ts)

	st.failing.Store(true)
	r := submitCode(b, p, code(t, secret, ts.Clock.Now().Add(30*time.Second)))
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Location") != "" {
		t.Fatalf("the last write failing: %d (Location %q), want 503", r.StatusCode, r.Header.Get("Location"))
	}

	st.failing.Store(false)
	ts.Clock.Advance(30 * time.Second)
	r = submitCode(b, p, code(t, secret, ts.Clock.Now().Add(30*time.Second)))
	if got := amrOf(t, tokensFrom(t, ts, r, verifier)); !strings.Contains(strings.Join(got, " "), "mfa") {
		t.Fatalf("after the store is back: amr %v", got)
	}
}

// TestParallelCodesCountOneByOne: wrong codes sent at once are each
// counted before the next is checked (the count and the check are one
// update of the enrollment), so the five free attempts and the one that
// starts the wait go ahead, and every other is refused unchecked.
func TestParallelCodesCountOneByOne(t *testing.T) {
	for name, mutate := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, mutate)
			hb, _ := loginAs(t, ts, "alice")
			secret, _ := enroll(t, ts, hb)
			b, p, _ := passwordThenOTP(t, ts)
			const n = 20
			status := make([]int, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					status[i] = submitCode(b, p, "000000").StatusCode
				})
			}
			close(start)
			wg.Wait()
			counts := map[int]int{}
			for _, st := range status {
				counts[st]++
			}
			if counts[http.StatusUnauthorized] != 6 || counts[http.StatusTooManyRequests] != n-6 {
				t.Fatalf("%d wrong codes at once: %v, want 6 checked (401) and %d refused (429)", n, counts, n-6)
			}
			// The right code waits too.
			if r := submitCode(b, p, code(t, secret, ts.Clock.Now().Add(30*time.Second))); r.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("the right code during the wait: %d", r.StatusCode)
			}
		})
	}
}

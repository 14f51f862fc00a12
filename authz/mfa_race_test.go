package authz_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// stores are the backends the server-level atomicity tests run on.
func stores(t *testing.T) map[string]func(*authz.Config) {
	return map[string]func(*authz.Config){
		"memory": nil,
		"redis": func(c *authz.Config) {
			testenv.Require(t, "redis-server", "redis-server")
			st, err := redis.New(redis.Config{URL: "redis://" + testenv.StartRedis(t) + "/0"})
			if err != nil {
				t.Fatal(err)
			}
			c.Store = st
		},
	}
}

// TestSecondFactorOneWinner: the same TOTP code, or the same recovery
// code, sent from several browsers at once logs in exactly one of them.
func TestSecondFactorOneWinner(t *testing.T) {
	for name, mutate := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, mutate)
			b := newBrowser(t, ts.Issuer)
			exchange(t, ts, b)
			secret, recovery := enroll(t, ts, b)
			for _, kind := range []string{"totp", "recovery"} {
				t.Run(kind, func(t *testing.T) {
					c := recovery[0]
					if kind == "totp" {
						c = code(t, secret, ts.Clock.Now().Add(30*time.Second))
					}
					// Losers may count after the winner clears the count: two rounds of
					// three stay within the five free attempts.
					const n = 3
					type racer struct {
						b *browser
						p page
					}
					racers := make([]racer, n)
					for i := range racers {
						rb, rp, _ := passwordThenOTP(t, ts)
						racers[i] = racer{rb, rp}
					}
					var wg sync.WaitGroup
					status := make([]int, n)
					start := make(chan struct{})
					for i, r := range racers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							<-start
							status[i] = submitCode(r.b, r.p, c).StatusCode
						}()
					}
					close(start)
					wg.Wait()
					wins := 0
					for _, st := range status {
						switch st {
						case http.StatusSeeOther:
							wins++
						case http.StatusUnauthorized:
						default:
							t.Errorf("unexpected status %d", st)
						}
					}
					if wins != 1 {
						t.Fatalf("%d of %d concurrent uses of one %s code succeeded (%v), want 1", wins, n, kind, status)
					}
				})
			}
		})
	}
}

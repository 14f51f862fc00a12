package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/storetest"
	"github.com/stepup-dev/stepup/internal/testenv"
)

var ctx = context.Background()

func newStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func harness(t *testing.T, cfg Config) storetest.Harness {
	return storetest.Harness{Store: newStore(t, cfg), Now: time.Now, Advance: time.Sleep}
}

func TestConformance(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		addr := testenv.StartRedis(t)
		admin := goredis.NewClient(&goredis.Options{Addr: addr})
		t.Cleanup(func() { admin.Close() })
		storetest.Run(t, func(t *testing.T) storetest.Harness {
			if err := admin.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			return harness(t, Config{URL: "redis://" + addr})
		})

		// Without a flush, only the prefix keeps each sub-test's store fresh,
		// so this run also shows that stores under different prefixes do not
		// see each other.
		t.Run("prefix", func(t *testing.T) {
			if err := admin.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			n := 0
			storetest.Run(t, func(t *testing.T) storetest.Harness {
				n++
				return harness(t, Config{URL: "redis://" + addr + "/0", Prefix: fmt.Sprintf("app:t%d:", n)})
			})
			keys, err := admin.Keys(ctx, "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if !strings.HasPrefix(k, "app:t") {
					t.Errorf("key %q is outside the configured prefixes", k)
				}
			}
		})
	})

	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		addrs := testenv.StartRedisCluster(t)
		admin := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { admin.Close() })
		storetest.Run(t, func(t *testing.T) storetest.Harness {
			err := admin.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
				return c.FlushAll(ctx).Err()
			})
			if err != nil {
				t.Fatal(err)
			}
			return harness(t, Config{URL: "redis://" + strings.Join(addrs, ",")})
		})
	})
}

// counter counts round trips: a command or a pipeline (MULTI/EXEC included)
// is one each.
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (c *counter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestRoundTrips pins the cost of each operation, above all the code
// exchange: one LoadFamily plus one ApplyFamily.
func TestRoundTrips(t *testing.T) {
	addr := testenv.StartRedis(t)
	s := newStore(t, Config{URL: "redis://" + addr})
	c := &counter{}
	s.rdb.AddHook(c)
	exp := time.Now().Add(time.Hour)

	measure := func(name string, want int64, fn func() error) {
		t.Helper()
		before := c.n.Load()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := c.n.Load() - before; got != want {
			t.Errorf("%s: %d round trips, want %d", name, got, want)
		}
	}
	noErr := func(_ any, err error) error { return err }

	// Opening a connection costs its own handshake; count only what the
	// operations send on an open one.
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// A server that has not seen a script yet answers EVALSHA with
	// NOSCRIPT; the EVAL that follows loads it.
	measure("first ApplyFamily", 2, func() error {
		return s.ApplyFamily(ctx, "f", exp, storage.Put("code:a", []byte("A")), storage.Put("pkce:a", []byte("P")))
	})
	measure("first Incr", 2, func() error { return noErr(s.Incr(ctx, "n", "k", time.Minute)) })

	measure("LoadFamily", 1, func() error { return noErr(s.LoadFamily(ctx, "f")) })
	measure("ApplyFamily", 1, func() error {
		return s.ApplyFamily(ctx, "f", exp, storage.Spend("code:a"), storage.Delete("pkce:a"),
			storage.Put("at:1", []byte("T")), storage.Put("rt:1", []byte("R")))
	})
	measure("ApplyFamily (lost race)", 1, func() error {
		if err := s.ApplyFamily(ctx, "f", exp, storage.Spend("code:a")); !errors.Is(err, storage.ErrAlreadyExists) {
			return fmt.Errorf("got %v, want ErrAlreadyExists", err)
		}
		return nil
	})
	measure("ApplyFamily (prefixes)", 1, func() error {
		return s.ApplyFamily(ctx, "f", exp, storage.DeletePrefix("at:"), storage.SpendPrefix("rt:"))
	})
	measure("Put", 1, func() error { return s.Put(ctx, "ns", "k", []byte("v"), time.Minute) })
	measure("Get", 1, func() error { return noErr(s.Get(ctx, "ns", "k")) })
	measure("Take", 1, func() error { return noErr(s.Take(ctx, "ns", "k")) })
	measure("Create", 1, func() error { return s.Create(ctx, "ns", "k", []byte("v"), time.Minute) })
	measure("Delete", 1, func() error { return s.Delete(ctx, "ns", "k") })
	measure("Incr", 1, func() error { return noErr(s.Incr(ctx, "n", "k", time.Minute)) })
	measure("Update", 3, func() error {
		return s.Update(ctx, "ns", "u", time.Minute, func([]byte) ([]byte, error) { return []byte("x"), nil })
	})
	measure("Ping", 1, func() error { return s.Ping(ctx) })
}

// TestKeyLayout pins the key names and expiries that operators see, and that
// nothing a caller passes forms a Cluster hash tag.
func TestKeyLayout(t *testing.T) {
	addr := testenv.StartRedis(t)
	s := newStore(t, Config{URL: "redis://" + addr, Prefix: "p:"})
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })

	if err := s.Put(ctx, "sess{1}", "a:b%", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := admin.Get(ctx, "p:kv:sess%7B1%7D:a%3Ab%25").Result(); err != nil || got != "v" {
		t.Fatalf("KV key: %q, %v", got, err)
	}
	exp := time.Now().Add(time.Hour)
	if err := s.ApplyFamily(ctx, "req{9}", exp, storage.Put("code:a", []byte("A")), storage.Put("rt:a", []byte("R"))); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyFamily(ctx, "req{9}", exp.Add(-time.Minute), storage.Spend("rt:a")); err != nil {
		t.Fatal(err)
	}
	fields, err := admin.HGetAll(ctx, "p:fam:req%7B9%7D").Result()
	if err != nil || len(fields) != 2 || fields["code:a"] != "0A" || fields["rt:a"] != "1R" {
		t.Fatalf("family hash: %q, %v", fields, err)
	}
	// The second batch's earlier expiresAt must not shorten the family.
	if left, err := admin.PTTL(ctx, "p:fam:req%7B9%7D").Result(); err != nil || left < 59*time.Minute+30*time.Second {
		t.Fatalf("family expires in %v (%v), want about an hour", left, err)
	}
}

func TestEscapeIsInjective(t *testing.T) {
	s := &Store{prefix: "p:"}
	pairs := [][2]string{
		{"a:b", "c"}, {"a", "b:c"}, {"a%3Ab", "c"}, {"a", "b%3Ac"},
		{"{x}", "y"}, {"%7Bx%7D", "y"}, {"a\x00b", "c"}, {"a", "\x00b:c"}, {"", ""}, {"", ":"}, {":", ""},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		k := s.kvKey(p[0], p[1])
		if strings.ContainsAny(k, "{}") {
			t.Errorf("kvKey(%q, %q) = %q has a brace", p[0], p[1], k)
		}
		if q, dup := seen[k]; dup {
			t.Errorf("kvKey(%q) and kvKey(%q) are both %q", p, q, k)
		}
		seen[k] = p
	}
}

func TestNewURL(t *testing.T) {
	for _, tc := range []struct {
		url     string
		cluster bool
	}{
		{"redis://127.0.0.1:6379", false},
		{"redis://user:pw@127.0.0.1:6379/2?pool_size=4", false},
		{"rediss://[::1]:6380/0", false},
		{"unix:///run/redis.sock?db=1", false},
		{"redis://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000", true},
		{"redis://:pw@10.0.0.1:7000,[::1]:7001/?read_timeout=1s", true},
		{"redis://10.0.0.1:7000?addr=10.0.0.2:7000", true},
		{"redis://s1:26379,s2:26379/1?master_name=main&password=pw", false},
	} {
		s, err := New(Config{URL: tc.url})
		if err != nil {
			t.Errorf("New(%q): %v", tc.url, err)
			continue
		}
		if _, isCluster := s.rdb.(*goredis.ClusterClient); isCluster != tc.cluster {
			t.Errorf("New(%q) made a %T", tc.url, s.rdb)
		}
		s.Close()
	}
	for _, cfg := range []Config{
		{URL: "127.0.0.1:6379"},
		{URL: "http://127.0.0.1:6379"},
		{URL: "redis://h1:1,,h2:2"},
		{URL: "redis://h1:1,h2:2/3"},
		{URL: "redis://h:1?no_such_option=1"},
		{URL: "redis://user:secret-pw@h:1/x"},
		{URL: "redis://user:secret-pw@h:1%zz"},
		{URL: "redis://h:1", Prefix: "{app}:"},
	} {
		_, err := New(cfg)
		if err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		} else if strings.Contains(err.Error(), "secret-pw") {
			t.Errorf("New(%+v): the error shows the password: %v", cfg, err)
		}
	}
}

// TestUnavailable points stores at a port nobody listens on, and at one
// that accepts connections but never answers: every method must fail with
// ErrUnavailable, which the HTTP edge answers with 503, and soon.
func TestUnavailable(t *testing.T) {
	closed1, closed2 := testenv.FreePort(t), testenv.FreePort(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn // kept open and unanswered until the test ends
		for {
			c, err := silent.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()

	for name, url := range map[string]string{
		"closed/standalone": fmt.Sprintf("redis://127.0.0.1:%d", closed1),
		"closed/cluster":    fmt.Sprintf("redis://127.0.0.1:%d,127.0.0.1:%d", closed1, closed2),
		"closed/sentinel":   fmt.Sprintf("redis://127.0.0.1:%d?master_name=main", closed1),
		"silent/standalone": "redis://" + silent.Addr().String(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, Config{URL: url})
			exp := time.Now().Add(time.Hour)
			calls := map[string]func(ctx context.Context) error{
				"Get":    func(ctx context.Context) error { _, err := s.Get(ctx, "ns", "k"); return err },
				"Put":    func(ctx context.Context) error { return s.Put(ctx, "ns", "k", []byte("v"), time.Minute) },
				"Create": func(ctx context.Context) error { return s.Create(ctx, "ns", "k", []byte("v"), time.Minute) },
				"Take":   func(ctx context.Context) error { _, err := s.Take(ctx, "ns", "k"); return err },
				"Delete": func(ctx context.Context) error { return s.Delete(ctx, "ns", "k") },
				"Incr":   func(ctx context.Context) error { _, err := s.Incr(ctx, "ns", "k", time.Minute); return err },
				"Update": func(ctx context.Context) error {
					return s.Update(ctx, "ns", "k", time.Minute, func([]byte) ([]byte, error) {
						return nil, errors.New("Update called fn without a store")
					})
				},
				"LoadFamily":  func(ctx context.Context) error { _, err := s.LoadFamily(ctx, "f"); return err },
				"ApplyFamily": func(ctx context.Context) error { return s.ApplyFamily(ctx, "f", exp, storage.Spend("code:a")) },
				"Ping":        func(ctx context.Context) error { return s.Ping(ctx) },
			}
			// Concurrently, so that the silent server's timeouts add up to
			// one timeout, not ten.
			var wg sync.WaitGroup
			for op, call := range calls {
				wg.Go(func() {
					// A caller without a deadline of its own must not hang either.
					start := time.Now()
					err := call(context.Background())
					if took := time.Since(start); took > 5*time.Second {
						t.Errorf("%s took %v", op, took)
					}
					if !errors.Is(err, storage.ErrUnavailable) {
						t.Errorf("%s: %v, want ErrUnavailable", op, err)
					}
				})
			}
			wg.Wait()
		})
	}
}

package authz_test

import (
	"context"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// BenchmarkBytesPerToken measures what each issued token leaves in the
// store until it expires: the Go heap it keeps live on the memory store
// (beside bare fosite's memory store), and Redis's used_memory. Each
// iteration issues one token; the figure is the growth over all of them,
// after a collection, divided by their number.
//
//	go test ./authz -run '^$' -bench BytesPerToken -benchtime 20000x
func BenchmarkBytesPerToken(b *testing.B) {
	cc := func(b *testing.B, h http.Handler) {
		b.Helper()
		b.ReportAllocs()
		benchClientCredentials(b, h)
	}
	b.Run("stepup-memory/client_credentials", func(b *testing.B) {
		ts := newBenchServer(b, "memory")
		perToken(b, heapInUse, func() { cc(b, ts.Config.Handler) })
	})
	b.Run("stepup-memory/code_exchange", func(b *testing.B) {
		ts := newBenchServer(b, "memory")
		codes := ts.stepupCodes(b)(b.N)
		perToken(b, heapInUse, func() { benchCodeExchange(b, ts.Config.Handler, func(int) []url.Values { return codes }) })
	})
	b.Run("fosite-memory/client_credentials", func(b *testing.B) {
		bf := newBareFosite(b, sha256Hasher{})
		perToken(b, heapInUse, func() { cc(b, bf) })
	})
	b.Run("stepup-redis/client_credentials", func(b *testing.B) {
		testenv.Require(b, "redis-server", "redis-server")
		addr := testenv.StartRedis(b)
		ts := newTestServer(b, func(c *authz.Config) {
			st, err := redis.New(redis.Config{URL: "redis://" + addr + "/0"})
			if err != nil {
				b.Fatal(err)
			}
			c.Store = st
		})
		admin := goredis.NewClient(&goredis.Options{Addr: addr})
		b.Cleanup(func() { admin.Close() })
		perToken(b, func() int64 { return redisUsedMemory(b, admin) }, func() { cc(b, ts.Config.Handler) })
	})
}

// perToken runs issue and reports how much measure grew per iteration.
func perToken(b *testing.B, measure func() int64, issue func()) {
	b.Helper()
	before := measure()
	issue()
	b.StopTimer()
	grown := measure() - before
	b.ReportMetric(float64(grown)/float64(b.N), "B/token")
	runtime.KeepAlive(issue)
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func redisUsedMemory(b *testing.B, c *goredis.Client) int64 {
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no used_memory in INFO memory: %s", info)
	return 0
}

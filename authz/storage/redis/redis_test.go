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

		// The Cluster itself agrees: a group's keys are in one slot, and
		// different groups spread over the slots.
		t.Run("group-slots", func(t *testing.T) {
			s := newStore(t, Config{URL: "redis://" + strings.Join(addrs, ",")})
			slots := map[int64]bool{}
			for _, g := range []string{"", "people", "orgs", "org{7}:x", "a", "b", "c", "d"} {
				keys := []string{s.recKey(g), s.indexKey(g, "users"), s.indexKey(g, "by:name{x}")}
				slot, err := admin.ClusterKeySlot(ctx, keys[0]).Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range keys[1:] {
					if other, err := admin.ClusterKeySlot(ctx, k).Result(); err != nil || other != slot {
						t.Errorf("group %q: %q is in slot %d (%v), %q in %d", g, keys[0], slot, err, k, other)
					}
				}
				slots[slot] = true
			}
			if len(slots) < 2 {
				t.Errorf("eight groups all in slot %v", slots)
			}
		})

		t.Run("get-many-per-node", func(t *testing.T) { testGetManyPerNode(t, addrs) })
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

// nodeCounter counts, on one Cluster node, the pipelines and the single
// commands it is sent. While barrier is set, each pipeline waits in the hook
// until barrier nodes have started theirs, or gives up after a while and
// says so in serial: that shows the nodes are sent their parts at once.
type nodeCounter struct {
	mu        sync.Mutex
	pipelines map[string]int
	commands  map[string]int
	barrier   int
	entered   int
	all       chan struct{}
	serial    bool
}

func (c *nodeCounter) hook(addr string) goredis.Hook { return &nodeHook{c: c, addr: addr} }

type nodeHook struct {
	c    *nodeCounter
	addr string
}

func (h *nodeHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *nodeHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.c.mu.Lock()
		h.c.commands[h.addr]++
		h.c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *nodeHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		c := h.c
		c.mu.Lock()
		c.pipelines[h.addr]++
		wait := c.barrier > 0
		if wait {
			c.entered++
			if c.entered == c.barrier {
				close(c.all)
			}
		}
		all := c.all
		c.mu.Unlock()
		if wait {
			select {
			case <-all:
			case <-time.After(3 * time.Second):
				c.mu.Lock()
				c.serial = true
				c.mu.Unlock()
			}
		}
		return next(ctx, cmds)
	}
}

// testGetManyPerNode pins what go-redis makes of GetMany on a Cluster, where
// the keys lie in slots of every node: one pipeline to each master, sent
// concurrently, and no command on its own; to hooks on the Cluster client
// itself, one pipeline.
func testGetManyPerNode(t *testing.T, addrs []string) {
	s := newStore(t, Config{URL: "redis://" + strings.Join(addrs, ",")})
	nodes := &nodeCounter{pipelines: map[string]int{}, commands: map[string]int{}}
	cluster := s.rdb.(*goredis.ClusterClient)
	// Before the first command, so that every node client gets the hook.
	cluster.OnNewNode(func(c *goredis.Client) { c.AddHook(nodes.hook(c.Options().Addr)) })
	whole := &counter{}
	s.AddHook(whole)

	keys := make([]string, 500)
	for i := range keys {
		keys[i] = fmt.Sprintf("member-%d", i)
		if i%2 == 0 {
			if err := s.Put(ctx, "mfa", keys[i], []byte(keys[i]), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first call also loads what the client learns once (the slot map,
	// the command table); count only what a call on a warm client sends.
	if _, err := s.GetMany(ctx, "mfa", keys...); err != nil {
		t.Fatal(err)
	}
	nodes.mu.Lock()
	clear(nodes.pipelines)
	clear(nodes.commands)
	nodes.barrier, nodes.all = len(addrs), make(chan struct{})
	nodes.mu.Unlock()
	before := whole.n.Load()

	got, err := s.GetMany(ctx, "mfa", keys...)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if want := keys[i]; (i%2 == 0) != (v != nil) || (v != nil && string(v) != want) {
			t.Fatalf("key %q = %q", keys[i], v)
		}
	}
	if n := whole.n.Load() - before; n != 1 {
		t.Errorf("the Cluster client saw %d round trips, want 1 pipeline", n)
	}
	nodes.mu.Lock()
	defer nodes.mu.Unlock()
	if len(nodes.pipelines) != len(addrs) {
		t.Errorf("pipelines went to %d nodes (%v), want all %d masters", len(nodes.pipelines), nodes.pipelines, len(addrs))
	}
	for addr, n := range nodes.pipelines {
		if n != 1 {
			t.Errorf("node %s was sent %d pipelines, want 1", addr, n)
		}
	}
	if len(nodes.commands) != 0 {
		t.Errorf("single commands were sent as well: %v", nodes.commands)
	}
	if nodes.serial {
		t.Errorf("the nodes' pipelines did not all start before the first one ended: sent one after another")
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
	measure("first ApplyRecords", 2, func() error {
		return s.ApplyRecords(ctx, "people", storage.Insert("user:1", []byte("A")), storage.AddToIndex("users", "1"))
	})

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
	measure("GetRecords", 1, func() error { return noErr(s.GetRecords(ctx, "people", "user:1", "user:2", "name:a")) })
	measure("GetRecords (no names)", 0, func() error { return noErr(s.GetRecords(ctx, "people")) })
	measure("ApplyRecords", 1, func() error {
		return s.ApplyRecords(ctx, "people", storage.Expect("user:1", []byte("A")), storage.Set("user:1", []byte("B")),
			storage.Insert("name:a", []byte("1")), storage.AddToIndex("names", "a"), storage.RemoveFromIndex("users", "1"),
			storage.AddToIndex("users", "1"))
	})
	measure("ApplyRecords (failed precondition)", 1, func() error {
		var re *storage.RecordError
		if err := s.ApplyRecords(ctx, "people", storage.Insert("name:a", nil)); !errors.As(err, &re) {
			return fmt.Errorf("got %v, want a *RecordError", err)
		}
		return nil
	})
	measure("ApplyRecords (no ops)", 0, func() error { return s.ApplyRecords(ctx, "people") })
	measure("ScanIndex", 1, func() error { return noErr(s.ScanIndex(ctx, "people", "users", "", 50)) })
	measure("ScanIndex (limit 0)", 0, func() error { return noErr(s.ScanIndex(ctx, "people", "users", "", 0)) })
	measure("IndexSize", 1, func() error { return noErr(s.IndexSize(ctx, "people", "users")) })
	measure("Put", 1, func() error { return s.Put(ctx, "ns", "k", []byte("v"), time.Minute) })
	measure("Get", 1, func() error { return noErr(s.Get(ctx, "ns", "k")) })
	measure("GetMany", 1, func() error { return noErr(s.GetMany(ctx, "ns", "absent", "k", "other")) })
	many := make([]string, 500)
	for i := range many {
		many[i] = fmt.Sprintf("member-%d", i)
	}
	measure("GetMany (500 keys)", 1, func() error { return noErr(s.GetMany(ctx, "ns", many...)) })
	measure("GetMany (no keys)", 0, func() error { return noErr(s.GetMany(ctx, "ns")) })
	measure("Take", 1, func() error { return noErr(s.Take(ctx, "ns", "k")) })
	measure("Create", 1, func() error { return s.Create(ctx, "ns", "k", []byte("v"), time.Minute) })
	measure("Delete", 1, func() error { return s.Delete(ctx, "ns", "k") })
	measure("Incr", 1, func() error { return noErr(s.Incr(ctx, "n", "k", time.Minute)) })
	measure("Update", 3, func() error {
		return s.Update(ctx, "ns", "u", time.Minute, func([]byte) ([]byte, error) { return []byte("x"), nil })
	})
	measure("Ping", 1, func() error { return s.Ping(ctx) })

	batch := func(ops ...storage.BatchOp) func() error {
		return func() error { _, err := s.Batch(ctx, ops...); return err }
	}
	// Swap's script is new to the server: the batch goes again, as EVAL,
	// for it alone.
	measure("first Batch with a new script", 2, batch(storage.SwapOp("ns", "s", nil, []byte("1"), time.Minute),
		storage.GetOp("ns", "s")))
	measure("Batch", 1, batch(
		storage.GetOp("ns", "k"), storage.PutOp("ns", "k", []byte("v"), time.Minute),
		storage.CreateOp("ns", "c", []byte("v"), time.Minute), storage.TakeOp("ns", "c"), storage.DeleteOp("ns", "k"),
		storage.IncrOp("n", "k", time.Minute), storage.SwapOp("ns", "s", []byte("1"), []byte("2"), time.Minute),
		storage.GetRecordsOp("people", "user:1", "name:a"), storage.GetRecordsOp("people"),
		storage.ApplyFamilyOp("f", exp, storage.Put("at:2", []byte("T")))))
	measure("Batch (no ops)", 0, batch())
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

	// A Records group: one hash of records and a sorted set per index, all
	// under the group's one hash tag, and none of them expires.
	if err := s.ApplyRecords(ctx, "org{7}:x", storage.Insert("user:1", []byte("A")), storage.Insert("", []byte{}),
		storage.AddToIndex("by:name", "bob"), storage.AddToIndex("by:name", "alice"), storage.AddToIndex("{all}", "1")); err != nil {
		t.Fatal(err)
	}
	recs, err := admin.HGetAll(ctx, "p:rec:{org%7B7%7D%3Ax}:r").Result()
	if err != nil || len(recs) != 2 || recs["user:1"] != "A" || recs[""] != "" {
		t.Fatalf("record hash: %q, %v", recs, err)
	}
	members, err := admin.ZRangeWithScores(ctx, "p:rec:{org%7B7%7D%3Ax}:i:by%3Aname", 0, -1).Result()
	if err != nil || len(members) != 2 || members[0] != (goredis.Z{Member: "alice"}) || members[1] != (goredis.Z{Member: "bob"}) {
		t.Fatalf("index sorted set: %v, %v", members, err)
	}
	if err := s.ApplyRecords(ctx, "", storage.Set("r", []byte("v")), storage.AddToIndex("ix", "m")); err != nil {
		t.Fatal(err)
	}
	wantKeys := map[string]string{ // key → its hash tag
		"p:kv:sess%7B1%7D:a%3Ab%25":          "",
		"p:fam:req%7B9%7D":                   "",
		"p:rec:{org%7B7%7D%3Ax}:r":           "org%7B7%7D%3Ax",
		"p:rec:{org%7B7%7D%3Ax}:i:by%3Aname": "org%7B7%7D%3Ax",
		"p:rec:{org%7B7%7D%3Ax}:i:%7Ball%7D": "org%7B7%7D%3Ax",
		"p:rec:{%}:r":                        "%",
		"p:rec:{%}:i:ix":                     "%",
	}
	keys, err := admin.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(wantKeys) {
		t.Errorf("keys %q, want %d", keys, len(wantKeys))
	}
	for _, k := range keys {
		want, ok := wantKeys[k]
		switch {
		case !ok:
			t.Errorf("unexpected key %q", k)
		case hashTag(k) != want:
			t.Errorf("key %q has hash tag %q, want %q", k, hashTag(k), want)
		}
		if strings.HasPrefix(k, "p:rec:") {
			if left, err := admin.PTTL(ctx, k).Result(); err != nil || left != -1 {
				t.Errorf("key %q expires in %v (%v), want never", k, left, err)
			}
		}
	}
}

// hashTag is what Redis Cluster hashes of a key, when not all of it: the
// bytes between the first '{' and the first '}' after it, if there are any.
func hashTag(key string) string {
	_, rest, ok := strings.Cut(key, "{")
	if !ok {
		return ""
	}
	tag, _, ok := strings.Cut(rest, "}")
	if !ok {
		return ""
	}
	return tag
}

// TestGroupKeys: whatever the group and index are called, every key of a
// group carries the group's one hash tag (so one script may touch them all
// on a Cluster), and no two groups or indexes share a key.
func TestGroupKeys(t *testing.T) {
	s := &Store{prefix: "p:"}
	groups := []string{"", "%", "a", "a:b", "a%3Ab", "{a}", "%7Ba%7D", "{", "}", "{}", "}{", "a\x00b", ":r", "r:i"}
	indexes := []string{"", "x", "i:x", "i%3Ax", "{x}", "r", ":r"}
	seen := map[string]string{}
	for _, g := range groups {
		tag := hashTag(s.recKey(g))
		if tag == "" {
			t.Errorf("group %q: record key %q has no hash tag", g, s.recKey(g))
		}
		keys := []string{s.recKey(g)}
		for _, ix := range indexes {
			keys = append(keys, s.indexKey(g, ix))
		}
		for i, k := range keys {
			if got := hashTag(k); got != tag {
				t.Errorf("group %q: key %q has hash tag %q, want %q", g, k, got, tag)
			}
			if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
				t.Errorf("group %q: key %q has more than one pair of braces", g, k)
			}
			what := fmt.Sprintf("group %q record hash", g)
			if i > 0 {
				what = fmt.Sprintf("group %q index %q", g, indexes[i-1])
			}
			if other, dup := seen[k]; dup {
				t.Errorf("%s and %s are both %q", what, other, k)
			}
			seen[k] = what
		}
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

// TestGetManyGivesUpOnce: against a server that accepts connections and
// never answers, a fresh store's GetMany fails after one read timeout. Left
// to itself, go-redis would wait out a second one: it opens pipelines'
// connections in a pool of their own, and when that fails opens another in
// the regular pool.
func TestGetManyGivesUpOnce(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		<-accepted
		for _, c := range held {
			c.Close()
		}
	})
	s := newStore(t, Config{URL: "redis://" + silent.Addr().String()})
	start := time.Now()
	_, err = s.GetMany(ctx, "mfa", "alice", "bob")
	took := time.Since(start)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("GetMany: %v, want ErrUnavailable", err)
	}
	if took > defaultIOTimeout+defaultIOTimeout/2 {
		t.Errorf("GetMany took %v, want one read timeout (%v)", took, defaultIOTimeout)
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
				"Get": func(ctx context.Context) error { _, err := s.Get(ctx, "ns", "k"); return err },
				"GetMany": func(ctx context.Context) error {
					_, err := s.GetMany(ctx, "ns", "k", "l")
					return err
				},
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
				"GetRecords": func(ctx context.Context) error {
					_, err := s.GetRecords(ctx, "g", "r")
					return err
				},
				"ApplyRecords": func(ctx context.Context) error {
					return s.ApplyRecords(ctx, "g", storage.Insert("r", []byte("v")), storage.AddToIndex("ix", "m"))
				},
				"ScanIndex": func(ctx context.Context) error {
					_, err := s.ScanIndex(ctx, "g", "ix", "", 10)
					return err
				},
				"IndexSize": func(ctx context.Context) error { _, err := s.IndexSize(ctx, "g", "ix"); return err },
				"Batch": func(ctx context.Context) error {
					res, err := s.Batch(ctx, storage.GetOp("ns", "k"), storage.IncrOp("ns", "n", time.Minute))
					for _, r := range res {
						if !errors.Is(r.Err, storage.ErrUnavailable) {
							t.Errorf("a batched op: %v, want ErrUnavailable", r.Err)
						}
					}
					return err
				},
			}
			// Concurrently, so that the silent server's timeouts add up to
			// one timeout, not one per call.
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

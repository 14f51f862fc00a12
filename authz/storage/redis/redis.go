// Package redis is the Store that replicas share: Redis standalone, behind
// Sentinel, or a Redis Cluster, through go-redis' universal client.
//
// Every KV and Grants operation touches exactly one Redis key, and every
// Records operation the keys of one group, which share a Cluster hash tag;
// so every operation works on a Cluster. The key layout (P is
// Config.Prefix):
//
//	P kv: ESC(ns) : ESC(key)            a string; KV entries, counters included
//	P fam: ESC(family)                  a hash; one field per record
//	P rec: {ESC(group)} :r              a hash; one field per record of the group
//	P rec: {ESC(group)} :i: ESC(index)  a sorted set, every score 0; one index
//
// ESC percent-encodes '%', ':', '{' and '}', so that no two (ns, key) pairs
// share a key name and no caller-chosen byte can form a hash tag that would
// pile keys into one Cluster slot. Other bytes, NUL included, are kept: Redis
// keys are binary-safe. The braces around a group are the one hash tag this
// store makes; the empty group is written {%}, since Redis ignores {}.
//
// A family record's hash value is one flag byte, '0' (unspent) or '1'
// (spent), followed by the record's value, so that a spend rewrites one
// field and LoadFamily is a single HGETALL. A group's record is its value
// as it is. An index keeps its members in byte order (ZRANGE … BYLEX).
//
// Round trips per call: Get, GetMany (a pipeline of GETs), Put, Create
// (SET NX PX), Take (GETDEL), Delete, Incr (a script), LoadFamily
// (HGETALL), ApplyFamily (a script), GetRecords (HMGET), ApplyRecords (a
// script), ScanIndex (ZRANGE BYLEX), IndexSize (ZCARD) and Batch (a
// pipeline, like GetMany's; see batch.go) one each; a
// script's first run on a server whose script cache lacks it costs one more
// (EVALSHA answered NOSCRIPT, then EVAL). On a Cluster, GetMany's one is one
// per node that holds some of its keys, all sent at once.
// Update is WATCH, GET, then MULTI/SET/EXEC in one pipeline: three, and
// again per retry.
//
// It needs Redis 6.2 or later (GETDEL, ZRANGE … BYLEX).
package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz/storage"
)

// Config configures a Store.
type Config struct {
	// URL says where Redis is:
	//
	//	redis://[user:pass@]host:port[/db][?option=value…]   one server
	//	rediss://…                                           the same over TLS
	//	unix://[user:pass@]/path/to/redis.sock[?db=N]        one server on a socket
	//	redis://[user:pass@]h1:p1,h2:p2,h3:p3[?…]            a Cluster, from two or more seeds
	//	redis://[user:pass@]s1:p1,s2:p2/db?master_name=NAME  Sentinel: the hosts are sentinels
	//
	// Options are go-redis' (ParseURL, ParseClusterURL, ParseFailoverURL):
	// snake_case option names such as dial_timeout=3s or pool_size=20, and
	// for Sentinel the master's credentials as username= and password=
	// while the user:pass part authenticates to the sentinels. Further seeds
	// may also be given as addr=host:port. A Cluster has only database 0.
	//
	// Unless the URL says otherwise, dial, read and write time out after 2s
	// and a failed command is not retried (see New).
	URL string
	// Prefix starts every key name; "" means "stepup:". It may not contain
	// '{' or '}', which would make it a Cluster hash tag.
	Prefix string
}

// Store keeps the storage contract in Redis. It is safe for concurrent use.
type Store struct {
	rdb    goredis.UniversalClient
	prefix string
}

var _ storage.Store = (*Store)(nil)

// Defaults for the URL options that matter to availability. A request that
// waits on a dead Redis holds a person's login page open, so the store gives
// up early and says storage.ErrUnavailable, which the HTTP edge turns into a
// 503 the client can retry.
const (
	defaultDialTimeout = 2 * time.Second
	defaultIOTimeout   = 2 * time.Second
)

// New makes a Store. It does not contact Redis: the server may come up
// later, and until it does every call fails with storage.ErrUnavailable.
//
// go-redis would by default resend a command whose reply was lost. For this
// store's writes that is wrong, not merely slow: a resent SET NX, GETDEL or
// spend would report the winner of a single-use race as its loser. So New
// turns those retries off (max_retries=-1) and dials once per command
// (dialer_retries=1) unless the URL asks otherwise. A Cluster client still
// follows MOVED and ASK redirections up to max_redirects (default 3), and
// go-redis spends that same budget resending after a network error, which
// no option turns off without also losing the redirections.
//
// go-redis would also send pipelines (GetMany's) on connections of a pool
// of their own, and when it fails to open one there, open another in the
// regular pool: against a server that accepts connections but does not
// answer, that is two timeouts before ErrUnavailable. New keeps pipelines
// in the regular pool (pipeline_pool_size=-1) unless the URL asks otherwise.
func New(cfg Config) (*Store, error) {
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "stepup:"
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redis store: prefix %q contains '{' or '}', which would put every key into one Cluster slot", prefix)
	}
	rdb, err := newClient(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	return &Store{rdb: rdb, prefix: prefix}, nil
}

func newClient(rawURL string) (goredis.UniversalClient, error) {
	u, seeds, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		addSeeds(u, seeds)
		o, err := goredis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, err
		}
		setDefaults(q, knobs{&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.PipelinePoolSize})
		return goredis.NewFailoverClient(o), nil
	case len(seeds) > 0 || q.Has("addr"):
		if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
			return nil, fmt.Errorf("URL %s: a Redis Cluster has only database 0", u.Redacted())
		}
		u.Path = ""
		addSeeds(u, seeds)
		o, err := goredis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		setDefaults(q, knobs{&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.PipelinePoolSize})
		if o.TLSConfig != nil {
			// go-redis names the first seed as the TLS server for every
			// node; left empty, each node is verified under its own name.
			o.TLSConfig.ServerName = ""
		}
		return goredis.NewClusterClient(o), nil
	default:
		o, err := goredis.ParseURL(u.String())
		if err != nil {
			return nil, err
		}
		setDefaults(q, knobs{&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.PipelinePoolSize})
		return goredis.NewClient(o), nil
	}
}

// parseURL splits a comma-separated host list off the URL, which
// net/url cannot parse, and returns the URL with the first host in place
// and the other hosts apart.
func parseURL(rawURL string) (*url.URL, []string, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	switch {
	case !ok:
		return nil, nil, errors.New("store URL must start with redis://, rediss:// or unix://")
	case scheme == "unix":
		u, err := url.Parse(rawURL)
		return u, nil, urlError(err)
	case scheme != "redis" && scheme != "rediss":
		return nil, nil, fmt.Errorf("store URL scheme %q: want redis, rediss or unix", scheme)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo := ""
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, authority = authority[:i+1], authority[i+1:]
	}
	hosts := strings.Split(authority, ",")
	for _, h := range hosts {
		if h == "" && len(hosts) > 1 {
			return nil, nil, errors.New("store URL has an empty entry in its host list")
		}
	}
	u, err := url.Parse(scheme + "://" + userinfo + hosts[0] + tail)
	if err != nil {
		return nil, nil, urlError(err)
	}
	return u, hosts[1:], nil
}

// urlError drops the URL that url.Parse quotes in its errors: it may hold a
// password, and this error ends up in logs.
func urlError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("store URL: %w", ue.Err)
	}
	return err
}

// addSeeds moves the extra hosts into addr= options, the form go-redis'
// parsers read.
func addSeeds(u *url.URL, seeds []string) {
	if len(seeds) == 0 {
		return
	}
	q := u.Query()
	for _, s := range seeds {
		q.Add("addr", s)
	}
	u.RawQuery = q.Encode()
}

// knobs are the go-redis options New chooses defaults for; the three
// option structs share these fields but no type.
type knobs struct {
	dial, read, write    *time.Duration
	retries, dialRetries *int
	ctxTimeout           *bool
	pipelinePool         *int
}

// setDefaults fills in the options the URL left out.
func setDefaults(q url.Values, k knobs) {
	if !q.Has("dial_timeout") {
		*k.dial = defaultDialTimeout
	}
	if !q.Has("read_timeout") {
		*k.read = defaultIOTimeout
	}
	if !q.Has("write_timeout") {
		*k.write = defaultIOTimeout
	}
	if !q.Has("max_retries") {
		*k.retries = -1 // go-redis: -1 is none, 0 is its default of 3
	}
	if !q.Has("dialer_retries") {
		*k.dialRetries = 1 // one attempt; go-redis' default is five
	}
	// A caller's deadline (a request's) then cuts a slow command short
	// instead of waiting out the full read timeout.
	if !q.Has("context_timeout_enabled") {
		*k.ctxTimeout = true
	}
	if !q.Has("pipeline_pool_size") {
		*k.pipelinePool = -1 // go-redis: -1 is none, 0 is its default of 10
	}
}

// esc keeps a caller's name from reaching into the structure of a key name:
// ':' separates the parts, '{' and '}' would form a Cluster hash tag, and
// '%' is the escape itself.
func esc(s string) string {
	if !strings.ContainsAny(s, "%:{}") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', ':', '{', '}':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (s *Store) kvKey(ns, key string) string { return s.prefix + "kv:" + esc(ns) + ":" + esc(key) }
func (s *Store) famKey(family string) string { return s.prefix + "fam:" + esc(family) }

// fail wraps a failure of Redis. Keys stay out of the message: some are
// derived from secrets (codes, tokens) and errors are logged.
func fail(op string, err error) error {
	// A value of the wrong shape (Incr on a non-number, a foreign key of
	// another type under our prefix) will fail the same way on every retry;
	// answering 503 would only invite retries.
	if goredis.HasErrorPrefix(err, "WRONGTYPE") || goredis.HasErrorPrefix(err, "value is not an integer") {
		return fmt.Errorf("redis %s: %w", op, err)
	}
	return fmt.Errorf("%w: redis %s: %w", storage.ErrUnavailable, op, err)
}

// ttl converts a storage TTL for go-redis, where 0 means no expiry and -1
// means KEEPTTL. Rounding up keeps a tiny positive TTL from becoming 0.
func ttl(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

func (s *Store) Get(ctx context.Context, ns, key string) ([]byte, error) {
	v, err := s.rdb.Get(ctx, s.kvKey(ns, key)).Bytes()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil, storage.ErrNotFound
	case err != nil:
		return nil, fail("get", err)
	}
	return v, nil
}

// GetMany sends one GET per key in one pipeline, not an MGET: an MGET's
// keys must share a Cluster slot, and KV keys carry no hash tag, so they
// spread over every slot. A standalone or Sentinel client writes the
// pipeline and reads its replies on one connection. A Cluster client splits
// it by the master that serves each key's slot (a replica, with read_only)
// and sends each node its part at once on that node's connection, so the
// call waits for its slowest node, once; keys that moved (MOVED, ASK) are
// resent to their new node within max_redirects.
func (s *Store) GetMany(ctx context.Context, ns string, keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	cmds := make([]*goredis.StringCmd, len(keys))
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, key := range keys {
			cmds[i] = p.Get(ctx, s.kvKey(ns, key))
		}
		return nil
	})
	// The pipeline answers the first command's error, and an absent key's
	// goredis.Nil is one; each command keeps its own.
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fail("get many", err)
	}
	for i, cmd := range cmds {
		v, err := cmd.Result()
		switch {
		case errors.Is(err, goredis.Nil): // absent or expired
		case err != nil:
			return nil, fail("get many", err)
		default:
			out[i] = append([]byte{}, v...) // present: never nil, even when empty
		}
	}
	return out, nil
}

func (s *Store) Put(ctx context.Context, ns, key string, value []byte, d time.Duration) error {
	if err := s.rdb.Set(ctx, s.kvKey(ns, key), value, ttl(d)).Err(); err != nil {
		return fail("put", err)
	}
	return nil
}

func (s *Store) Create(ctx context.Context, ns, key string, value []byte, d time.Duration) error {
	ok, err := s.rdb.SetNX(ctx, s.kvKey(ns, key), value, ttl(d)).Result()
	switch {
	case err != nil:
		return fail("create", err)
	case !ok:
		return storage.ErrAlreadyExists
	}
	return nil
}

func (s *Store) Take(ctx context.Context, ns, key string) ([]byte, error) {
	v, err := s.rdb.GetDel(ctx, s.kvKey(ns, key)).Bytes()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil, storage.ErrNotFound
	case err != nil:
		return nil, fail("take", err)
	}
	return v, nil
}

func (s *Store) Delete(ctx context.Context, ns, key string) error {
	if err := s.rdb.Del(ctx, s.kvKey(ns, key)).Err(); err != nil {
		return fail("delete", err)
	}
	return nil
}

// incrScript sets the expiry only when INCR created the counter, which is
// what makes the window fixed; a pipelined INCR+PEXPIRE would slide it.
// Asking EXISTS, rather than testing for 1, leaves alone a counter that was
// put as "0" without expiry, as the memory store does.
var incrScript = goredis.NewScript(`
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local n = redis.call('INCR', KEYS[1])
if fresh and ARGV[1] ~= '0' then
	redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
`)

func (s *Store) Incr(ctx context.Context, ns, key string, window time.Duration) (int64, error) {
	ms := ttl(window).Milliseconds()
	n, err := incrScript.Run(ctx, s.rdb, []string{s.kvKey(ns, key)}, ms).Int64()
	if err != nil {
		return 0, fail("incr", err)
	}
	return n, nil
}

// Update's optimistic transaction is retried while other writers win the
// race. Fifty conflicts in a row means a key far hotter than any this server
// keeps; better to fail than to spin.
const maxUpdateTries = 50

func (s *Store) Update(ctx context.Context, ns, key string, d time.Duration, fn func(old []byte) ([]byte, error)) error {
	k := s.kvKey(ns, key)
	var fnErr error
	txn := func(tx *goredis.Tx) error {
		old, err := tx.Get(ctx, k).Bytes()
		switch {
		case errors.Is(err, goredis.Nil):
			old = nil
		case err != nil:
			return err
		}
		v, err := fn(old)
		if err != nil {
			fnErr = err
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			if v == nil {
				p.Del(ctx, k)
			} else {
				p.Set(ctx, k, v, ttl(d))
			}
			return nil
		})
		return err
	}
	for attempt := range maxUpdateTries {
		fnErr = nil
		err := s.rdb.Watch(ctx, txn, k)
		switch {
		case fnErr != nil:
			return fnErr
		case err == nil:
			return nil
		case !errors.Is(err, goredis.TxFailedErr):
			return fail("update", err)
		}
		// Jitter keeps the losers of one race from colliding again.
		backoff := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 4)))
		select {
		case <-ctx.Done():
			return fail("update", ctx.Err())
		case <-time.After(backoff):
		}
	}
	return fmt.Errorf("%w: redis update: %d conflicting writes in a row", storage.ErrUnavailable, maxUpdateTries)
}

// Record values in a family hash start with one of these.
const (
	flagLive  = '0'
	flagSpent = '1'
)

func (s *Store) LoadFamily(ctx context.Context, family string) (map[string]storage.Entry, error) {
	fields, err := s.rdb.HGetAll(ctx, s.famKey(family)).Result()
	if err != nil {
		return nil, fail("load family", err)
	}
	if len(fields) == 0 {
		return nil, storage.ErrNotFound
	}
	out := make(map[string]storage.Entry, len(fields))
	for name, v := range fields {
		if v == "" || (v[0] != flagLive && v[0] != flagSpent) {
			return nil, fmt.Errorf("redis load family: record %q is not in this store's format", name)
		}
		out[name] = storage.Entry{Value: []byte(v[1:]), Spent: v[0] == flagSpent}
	}
	return out, nil
}

// applyScript is ApplyFamily: one script, so one round trip and atomic.
// KEYS[1] is the family hash, ARGV[1] the expiry in Unix milliseconds, then
// a (kind, name, value) triple per op. It returns 0, or 1 (a spent record
// is missing) or 2 (it is already spent) having changed nothing.
var applyScript = goredis.NewScript(`
local key = KEYS[1]
for i = 2, #ARGV, 3 do
	if ARGV[i] == 's' then
		local v = redis.call('HGET', key, ARGV[i+1])
		if not v then return 1 end
		if string.sub(v, 1, 1) == '1' then return 2 end
	end
end
for i = 2, #ARGV, 3 do
	local kind, name = ARGV[i], ARGV[i+1]
	if kind == 'p' then
		redis.call('HSET', key, name, '0' .. ARGV[i+2])
	elseif kind == 's' then
		-- An earlier op of the batch may have deleted the record; like the
		-- memory store, the spend then leaves an empty spent record.
		local v = redis.call('HGET', key, name) or '0'
		redis.call('HSET', key, name, '1' .. string.sub(v, 2))
	elseif kind == 'd' then
		redis.call('HDEL', key, name)
	else
		local all = redis.call('HGETALL', key)
		for j = 1, #all, 2 do
			local f = all[j]
			if string.sub(f, 1, #name) == name then
				if kind == 'D' then
					redis.call('HDEL', key, f)
				else
					redis.call('HSET', key, f, '1' .. string.sub(all[j+1], 2))
				end
			end
		end
	end
end
-- Redis removes an emptied hash itself. A surviving one lives until the
-- later of its current expiry and ARGV[1]; a new one has none yet.
if redis.call('EXISTS', key) == 1 then
	local left = redis.call('PTTL', key)
	local extend = left < 0
	if not extend then
		local t = redis.call('TIME')
		extend = tonumber(ARGV[1]) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + left
	end
	if extend then
		redis.call('PEXPIREAT', key, ARGV[1])
	end
end
return 0
`)

var opCodes = map[storage.OpKind]string{
	storage.OpPut:          "p",
	storage.OpSpend:        "s",
	storage.OpDelete:       "d",
	storage.OpDeletePrefix: "D",
	storage.OpSpendPrefix:  "S",
}

// familyArgs are applyScript's ARGV for ops.
func familyArgs(expiresAt time.Time, ops []storage.Op) ([]any, error) {
	// PEXPIREAT with a time in the past deletes the key, which is what an
	// expiry already past means; 1 ms stands in for times before 1970.
	at := max(expiresAt.UnixMilli(), 1)
	args := make([]any, 1, 1+3*len(ops))
	args[0] = at
	for _, op := range ops {
		code, ok := opCodes[op.Kind]
		if !ok {
			return nil, fmt.Errorf("redis apply family: unknown op kind %d", op.Kind)
		}
		args = append(args, code, op.Name, op.Value)
	}
	return args, nil
}

func (s *Store) ApplyFamily(ctx context.Context, family string, expiresAt time.Time, ops ...storage.Op) error {
	args, err := familyArgs(expiresAt, ops)
	if err != nil {
		return err
	}
	res, err := applyScript.Run(ctx, s.rdb, []string{s.famKey(family)}, args...).Int64()
	if err != nil {
		return fail("apply family", err)
	}
	switch res {
	case 0:
		return nil
	case 1:
		return storage.ErrNotFound
	case 2:
		return storage.ErrAlreadyExists
	}
	return fmt.Errorf("redis apply family: unexpected script result %d", res)
}

func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fail("ping", err)
	}
	return nil
}

func (s *Store) Close() error { return s.rdb.Close() }

// AddHook observes every command the store sends: for metrics, and for
// tests that count round trips.
func (s *Store) AddHook(h goredis.Hook) { s.rdb.AddHook(h) }

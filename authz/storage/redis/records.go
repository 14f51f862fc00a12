package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz/storage"
)

// groupTag is a Records group's Cluster hash tag, braces included. Every key
// of the group carries it, so they share a slot and one script can touch
// them all. esc keeps braces out of the tag's content. Redis hashes the whole
// key name when the braces are empty, so the empty group is written "%",
// which esc never produces (it writes '%' only as "%25").
func groupTag(group string) string {
	if group == "" {
		return "{%}"
	}
	return "{" + esc(group) + "}"
}

// recKey is the hash of a group's records, one field per record.
func (s *Store) recKey(group string) string { return s.prefix + "rec:" + groupTag(group) + ":r" }

// indexKey is the sorted set of one of a group's indexes.
func (s *Store) indexKey(group, index string) string {
	return s.prefix + "rec:" + groupTag(group) + ":i:" + esc(index)
}

func (s *Store) GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error) {
	out := make([][]byte, len(names))
	if len(names) == 0 {
		return out, nil // HMGET needs a field
	}
	vals, err := s.rdb.HMGet(ctx, s.recKey(group), names...).Result()
	if err != nil {
		return nil, fail("get records", err)
	}
	return recordValues(vals, len(names))
}

// recordValues reads HMGET's reply for n names.
func recordValues(vals []any, n int) ([][]byte, error) {
	out := make([][]byte, n)
	if len(vals) != n {
		return nil, fmt.Errorf("redis get records: %d values for %d names", len(vals), n)
	}
	for i, v := range vals {
		switch v := v.(type) {
		case nil: // absent
		case string:
			// []byte("") is empty but not nil: an empty record is present.
			out[i] = []byte(v)
		default:
			return nil, fmt.Errorf("redis get records: unexpected reply %T", v)
		}
	}
	return out, nil
}

// recordsScript is ApplyRecords: one script, so one round trip and atomic.
// KEYS[1] is the group's record hash and KEYS[2…] the indexes the batch
// touches; ARGV is a (kind, target, value) triple per op, where target is
// the record's name, or for an index op the position of its key in KEYS.
// It checks every precondition before it writes anything, and returns 0,
// or {1, n} (op n expected a record that is absent) or {2, n} (op n found
// a record present, or holding another value) having changed nothing.
//
// Lua strings are byte strings, so binary values compare and store
// exactly; HGET answers false for an absent field and "" for an empty one.
var recordsScript = goredis.NewScript(`
local rec = KEYS[1]
for i = 1, #ARGV, 3 do
	local kind = ARGV[i]
	if kind == 'i' or kind == 'e' then
		local v = redis.call('HGET', rec, ARGV[i+1])
		local n = (i + 2) / 3
		if kind == 'i' then
			if v then return {2, n} end
		elseif not v then
			return {1, n}
		elseif v ~= ARGV[i+2] then
			return {2, n}
		end
	end
end
for i = 1, #ARGV, 3 do
	local kind, target, value = ARGV[i], ARGV[i+1], ARGV[i+2]
	if kind == 'i' or kind == 'p' then
		redis.call('HSET', rec, target, value)
	elseif kind == 'd' then
		redis.call('HDEL', rec, target)
	elseif kind == 'a' then
		redis.call('ZADD', KEYS[tonumber(target)], 0, value)
	elseif kind == 'r' then
		redis.call('ZREM', KEYS[tonumber(target)], value)
	end
end
return 0
`)

var recordCodes = map[storage.RecordOpKind]string{
	storage.RecordInsert: "i",
	storage.RecordPut:    "p",
	storage.RecordDelete: "d",
	storage.RecordExpect: "e",
	storage.IndexAdd:     "a",
	storage.IndexRemove:  "r",
}

func (s *Store) ApplyRecords(ctx context.Context, group string, ops ...storage.RecordOp) error {
	if len(ops) == 0 {
		return nil
	}
	keys := []string{s.recKey(group)}
	slot := map[string]int{} // index name → its key's position in KEYS, from 1
	args := make([]any, 0, 3*len(ops))
	for _, op := range ops {
		code, ok := recordCodes[op.Kind]
		if !ok {
			return fmt.Errorf("redis apply records: unknown op kind %d", op.Kind)
		}
		var target any = op.Name
		if op.Kind == storage.IndexAdd || op.Kind == storage.IndexRemove {
			n, seen := slot[op.Name]
			if !seen {
				keys = append(keys, s.indexKey(group, op.Name))
				n = len(keys)
				slot[op.Name] = n
			}
			target = n
		}
		// A nil Value goes out as "", which is what the memory store
		// compares it with (bytes.Equal).
		args = append(args, code, target, op.Value)
	}
	res, err := recordsScript.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		return fail("apply records", err)
	}
	switch res := res.(type) {
	case int64:
		if res == 0 {
			return nil
		}
	case []any:
		if len(res) == 2 {
			code, _ := res[0].(int64)
			n, _ := res[1].(int64)
			if n >= 1 && n <= int64(len(ops)) && (code == 1 || code == 2) {
				e := storage.ErrNotFound
				if code == 2 {
					e = storage.ErrAlreadyExists
				}
				return &storage.RecordError{Name: ops[n-1].Name, Err: e}
			}
		}
	}
	return fmt.Errorf("redis apply records: unexpected script result %v", res)
}

// ScanIndex pages with ZRANGE … BYLEX: every score is 0, so the set is in
// byte order. The page starts at "(" + after, the first member greater
// than after. For after == "" that is every member but the empty one,
// which is what the memory store does (it skips a member equal to after);
// "-" would include it, and a caller paging one at a time would then get
// it back for ever.
func (s *Store) ScanIndex(ctx context.Context, group, index, after string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil // LIMIT 0 -1 would mean "all"
	}
	members, err := s.rdb.ZRangeArgs(ctx, goredis.ZRangeArgs{
		Key:   s.indexKey(group, index),
		Start: "(" + after,
		Stop:  "+",
		ByLex: true,
		Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fail("scan index", err)
	}
	if len(members) == 0 {
		return nil, nil
	}
	return members, nil
}

func (s *Store) IndexSize(ctx context.Context, group, index string) (int64, error) {
	n, err := s.rdb.ZCard(ctx, s.indexKey(group, index)).Result()
	if err != nil {
		return 0, fail("index size", err)
	}
	return n, nil
}

// followScript is Follow. Both records are fields of the group's one hash,
// so the script touches one key, in one slot. KEYS[1] is the hash, ARGV[1]
// the entry's name and ARGV[2] the prefix. It returns {} when the entry is
// absent, else {entry, record}, the record false (a nil reply) when
// absent.
var followScript = goredis.NewScript(`
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return {} end
return {id, redis.call('HGET', KEYS[1], ARGV[2] .. id)}
`)

func (s *Store) Follow(ctx context.Context, group, name, prefix string) ([]byte, []byte, error) {
	res, err := followScript.Run(ctx, s.rdb, []string{s.recKey(group)}, name, prefix).Result()
	if err != nil {
		return nil, nil, fail("follow", err)
	}
	return followValues(res)
}

// followValues reads followScript's reply.
func followValues(res any) ([]byte, []byte, error) {
	vals, ok := res.([]any)
	switch {
	case !ok || len(vals) > 2 || len(vals) == 1:
		return nil, nil, fmt.Errorf("redis follow: unexpected script result %v", res)
	case len(vals) == 0:
		return nil, nil, nil
	}
	out, err := recordValues(vals, 2)
	if err != nil {
		return nil, nil, err
	}
	if out[0] == nil {
		return nil, nil, fmt.Errorf("redis follow: unexpected script result %v", res)
	}
	return out[0], out[1], nil
}

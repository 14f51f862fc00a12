package redis

import (
	"context"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stepup-dev/stepup/authz/storage"
)

var _ storage.Batcher = (*Store)(nil)

// swapScript is BatchSwap, one script so that the comparison and the write
// are one step. KEYS[1] is the key; ARGV is: '1' when an old value is
// expected ('0': the key must be absent), that value, '1' when there is a
// new value ('0': delete), that value, and the expiry in milliseconds ('0'
// for none). It returns 0, or 1 (the key is absent) or 2 (it holds another
// value, or is present where absence was expected) having changed nothing.
var swapScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
	if cur then return 2 end
else
	if not cur then return 1 end
	if cur ~= ARGV[2] then return 2 end
end
if ARGV[3] == '0' then
	redis.call('DEL', KEYS[1])
elseif ARGV[5] == '0' then
	redis.call('SET', KEYS[1], ARGV[4])
else
	redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
end
return 0
`)

// batched is one op of a Batch on its way: the command it sent, and for a
// script what to send again if the server did not have it cached.
type batched struct {
	cmd    goredis.Cmder
	script *goredis.Script
	keys   []string
	args   []any
}

// Batch is one pipeline: plain commands for the plain operations, EVALSHA
// of the same scripts the single calls use for Incr, ApplyFamily and Swap.
// A standalone or Sentinel server gets the whole pipeline on one
// connection and runs it in order; a Cluster client sends each node its
// part at once (see GetMany), so the batch waits for its slowest node,
// once. A script that the server's cache lacks (NOSCRIPT: it did not run)
// is sent again as EVAL in one more round trip, which happens once per
// script and server.
func (s *Store) Batch(ctx context.Context, ops ...storage.BatchOp) ([]storage.BatchResult, error) {
	out := make([]storage.BatchResult, len(ops))
	if len(ops) == 0 {
		return out, nil
	}
	sent := make([]batched, len(ops))
	for _, op := range ops {
		if _, ok := batchNames[op.Kind]; !ok {
			return nil, fmt.Errorf("redis batch: unknown op kind %d", op.Kind)
		}
		if op.Kind == storage.BatchFollow && len(op.Names) != 1 {
			return nil, fmt.Errorf("redis batch: follow of %d names", len(op.Names))
		}
		if op.Kind == storage.BatchApplyFamily {
			if _, err := familyArgs(op.ExpiresAt, op.Ops); err != nil {
				return nil, err
			}
		}
	}
	_, _ = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, op := range ops {
			sent[i] = s.send(ctx, p, op)
		}
		return nil
	})
	var again []int
	for i, b := range sent {
		if b.script != nil && goredis.HasErrorPrefix(b.cmd.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		_, _ = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, i := range again {
				sent[i].cmd = sent[i].script.Eval(ctx, p, sent[i].keys, sent[i].args...)
			}
			return nil
		})
	}
	var first error
	for i, op := range ops {
		out[i] = result(op, sent[i].cmd)
		if first == nil && errors.Is(out[i].Err, storage.ErrUnavailable) {
			first = out[i].Err
		}
	}
	return out, first
}

var batchNames = map[storage.BatchKind]string{
	storage.BatchGet: "get", storage.BatchPut: "put", storage.BatchCreate: "create", storage.BatchTake: "take",
	storage.BatchDelete: "delete", storage.BatchIncr: "incr", storage.BatchSwap: "swap",
	storage.BatchGetRecords: "get records", storage.BatchApplyFamily: "apply family", storage.BatchFollow: "follow",
}

func (s *Store) send(ctx context.Context, p goredis.Pipeliner, op storage.BatchOp) batched {
	k := s.kvKey(op.NS, op.Key)
	switch op.Kind {
	case storage.BatchGet:
		return batched{cmd: p.Get(ctx, k)}
	case storage.BatchPut:
		return batched{cmd: p.Set(ctx, k, op.Value, ttl(op.TTL))}
	case storage.BatchCreate:
		return batched{cmd: p.SetNX(ctx, k, op.Value, ttl(op.TTL))}
	case storage.BatchTake:
		return batched{cmd: p.GetDel(ctx, k)}
	case storage.BatchDelete:
		return batched{cmd: p.Del(ctx, k)}
	case storage.BatchIncr:
		return script(ctx, p, incrScript, []string{k}, ttl(op.TTL).Milliseconds())
	case storage.BatchSwap:
		hasOld, hasNew := "0", "0"
		if op.Old != nil {
			hasOld = "1"
		}
		if op.Value != nil {
			hasNew = "1"
		}
		return script(ctx, p, swapScript, []string{k}, hasOld, op.Old, hasNew, op.Value, ttl(op.TTL).Milliseconds())
	case storage.BatchGetRecords:
		if len(op.Names) == 0 {
			return batched{} // HMGET needs a field
		}
		return batched{cmd: p.HMGet(ctx, s.recKey(op.Group), op.Names...)}
	case storage.BatchFollow:
		return script(ctx, p, followScript, []string{s.recKey(op.Group)}, op.Names[0], op.Prefix)
	default: // storage.BatchApplyFamily; checked in Batch
		args, _ := familyArgs(op.ExpiresAt, op.Ops)
		return script(ctx, p, applyScript, []string{s.famKey(op.Family)}, args...)
	}
}

func script(ctx context.Context, p goredis.Pipeliner, sc *goredis.Script, keys []string, args ...any) batched {
	return batched{cmd: sc.EvalSha(ctx, p, keys, args...), script: sc, keys: keys, args: args}
}

// result reads one op's reply as its single call would.
func result(op storage.BatchOp, cmd goredis.Cmder) storage.BatchResult {
	var r storage.BatchResult
	if cmd == nil { // GetRecords of no names
		r.Values = [][]byte{}
		return r
	}
	err := cmd.Err()
	if err != nil && !errors.Is(err, goredis.Nil) {
		r.Err = fail("batch "+batchNames[op.Kind], err)
		return r
	}
	switch op.Kind {
	case storage.BatchGet, storage.BatchTake:
		if v, err := cmd.(*goredis.StringCmd).Bytes(); err == nil {
			r.Value = append([]byte{}, v...) // present: never nil, even when empty
		}
	case storage.BatchCreate:
		if !cmd.(*goredis.BoolCmd).Val() {
			r.Err = storage.ErrAlreadyExists
		}
	case storage.BatchIncr:
		r.N, r.Err = cmd.(*goredis.Cmd).Int64()
	case storage.BatchSwap, storage.BatchApplyFamily:
		switch n, _ := cmd.(*goredis.Cmd).Int64(); n {
		case 0:
		case 1:
			r.Err = storage.ErrNotFound
		case 2:
			r.Err = storage.ErrAlreadyExists
		default:
			r.Err = fmt.Errorf("redis batch %s: unexpected script result %d", batchNames[op.Kind], n)
		}
	case storage.BatchGetRecords:
		r.Values, r.Err = recordValues(cmd.(*goredis.SliceCmd).Val(), len(op.Names))
	case storage.BatchFollow:
		entry, rec, err := followValues(cmd.(*goredis.Cmd).Val())
		r.Values, r.Err = [][]byte{entry, rec}, err
	}
	return r
}

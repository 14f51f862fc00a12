// Package storage is the server's run-time state: what one replica writes and
// every other replica must see. It has two parts.
//
// Records keeps long-lived records that must change together (the
// directory of people and organizations), and sorted indexes over them.
//
// A KV is a namespaced key-value store with expiry, for login sessions,
// pending authorization requests, throttling counters, single-use guards and
// the signing-key record.
//
// Grants keeps OAuth grant families. A family is everything issued from one
// authorization (fosite's request ID): the code, its PKCE and OpenID Connect
// records, and every access and refresh token rotated from it. A family lives
// under one key, so each atomic step of a flow (redeem a code and issue its
// tokens, rotate a refresh token, revoke a family) is one operation on one key,
// also in a Redis Cluster.
package storage

import (
	"context"
	"errors"
	"time"
)

// The vocabulary every backend speaks. Callers test with errors.Is.
var (
	// ErrNotFound: no such record, or it has expired.
	ErrNotFound = errors.New("storage: not found")
	// ErrAlreadyExists: a create-if-absent found the key taken, or a
	// single-use record was already used.
	ErrAlreadyExists = errors.New("storage: already exists")
	// ErrUnavailable wraps every failure of the backend itself (network,
	// server down, timeouts). The HTTP edge answers it with 503.
	ErrUnavailable = errors.New("storage: unavailable")
)

// Store is the whole run-time state.
type Store interface {
	KV
	Grants
	Records
	// Ping reports whether the backend answers; /readyz uses it.
	Ping(ctx context.Context) error
	Close() error
}

// KV is a namespaced key-value store whose entries expire. A ttl of zero
// means the entry never expires.
type KV interface {
	Get(ctx context.Context, ns, key string) ([]byte, error)
	// GetMany returns the values of keys in ns, in the order of keys: nil
	// for each absent or expired one, and a present value never nil, even
	// when empty. It is one round trip however many keys there are (none
	// for no keys), also when they lie in different Redis Cluster slots.
	// It is not atomic: a write made during the call may show in some
	// values and not in others.
	GetMany(ctx context.Context, ns string, keys ...string) ([][]byte, error)
	Put(ctx context.Context, ns, key string, value []byte, ttl time.Duration) error
	// Create stores value only if key is absent (ErrAlreadyExists otherwise).
	// It is the single-use guard: a TOTP step, a one-time code.
	Create(ctx context.Context, ns, key string, value []byte, ttl time.Duration) error
	// Take returns the value and deletes it in one step, so exactly one of
	// several concurrent callers gets it.
	Take(ctx context.Context, ns, key string) ([]byte, error)
	Delete(ctx context.Context, ns, key string) error
	// Incr adds one to a counter and returns the new value. The counter's
	// expiry is set when it is created and not extended by later increments,
	// which makes it a fixed window.
	Incr(ctx context.Context, ns, key string, window time.Duration) (int64, error)
	// Update reads the value (nil when absent), calls fn, and writes what fn
	// returns, atomically with respect to other Updates and writes of the key.
	// fn may run more than once. A nil result from fn deletes the key.
	Update(ctx context.Context, ns, key string, ttl time.Duration, fn func(old []byte) ([]byte, error)) error
}

// Entry is one record of a family.
type Entry struct {
	Value []byte
	// Spent is set by OpSpend: a used code, a rotated or revoked refresh
	// token. The record stays readable so that reuse can be detected.
	Spent bool
}

// Grants stores grant families.
type Grants interface {
	// LoadFamily returns every record of the family by name; ErrNotFound if
	// the family has none.
	LoadFamily(ctx context.Context, family string) (map[string]Entry, error)
	// ApplyFamily applies ops to one family atomically: all or nothing.
	// Preconditions (OpSpend) are checked against the family as it was before
	// the batch. The family is kept at least until expiresAt.
	ApplyFamily(ctx context.Context, family string, expiresAt time.Time, ops ...Op) error
}

// OpKind says what an Op does.
type OpKind uint8

const (
	// OpPut stores Value under Name (unspent).
	OpPut OpKind = iota + 1
	// OpSpend marks Name spent. It fails the batch with ErrNotFound when Name
	// is absent and ErrAlreadyExists when it is already spent: of several
	// concurrent spends, exactly one wins.
	OpSpend
	// OpDelete removes Name.
	OpDelete
	// OpDeletePrefix removes every record whose name starts with Name.
	OpDeletePrefix
	// OpSpendPrefix marks every record whose name starts with Name spent,
	// without preconditions.
	OpSpendPrefix
)

// Op is one step of an ApplyFamily batch.
type Op struct {
	Kind  OpKind
	Name  string
	Value []byte
}

func Put(name string, value []byte) Op { return Op{Kind: OpPut, Name: name, Value: value} }
func Spend(name string) Op             { return Op{Kind: OpSpend, Name: name} }
func Delete(name string) Op            { return Op{Kind: OpDelete, Name: name} }
func DeletePrefix(prefix string) Op    { return Op{Kind: OpDeletePrefix, Name: prefix} }
func SpendPrefix(prefix string) Op     { return Op{Kind: OpSpendPrefix, Name: prefix} }

// Records keeps small named records in groups, with sorted indexes. Every
// call touches one group, and ApplyRecords is atomic: in Redis a group is
// one Cluster hash tag, so one script sees all of it. A group is the unit
// of consistency, so things that must change together (a user and the
// index entries that make its username and email unique) share one.
type Records interface {
	// GetRecords returns the values of names in group, nil for each absent
	// one, in one round trip.
	GetRecords(ctx context.Context, group string, names ...string) ([][]byte, error)
	// ApplyRecords applies ops in order, all or nothing. Preconditions
	// (RecordInsert, RecordExpect) are checked against the group as it was
	// before the batch; a failed one fails the batch with a *RecordError.
	ApplyRecords(ctx context.Context, group string, ops ...RecordOp) error
	// ScanIndex returns up to limit members of index, in byte order,
	// starting after the member after ("" for the first page).
	ScanIndex(ctx context.Context, group, index, after string, limit int) ([]string, error)
	// IndexSize is the number of members of index.
	IndexSize(ctx context.Context, group, index string) (int64, error)
	// Follow reads the record name, whose value is the rest of another
	// record's name after prefix, and that record: a unique entry
	// ("username:alice", holding an id) and the record it points to
	// ("user:" and the id). A login would otherwise wait for the entry
	// before it could ask for the record. It is one round trip and one
	// atomic read, so the record is the one the entry named at that
	// moment. entry is nil when name is absent; record is nil then, and
	// when the record the entry names is absent.
	Follow(ctx context.Context, group, name, prefix string) (entry, record []byte, err error)
}

// RecordOpKind says what a RecordOp does.
type RecordOpKind uint8

const (
	// RecordInsert stores Value under Name, which must be absent
	// (ErrAlreadyExists otherwise): what makes a username unique.
	RecordInsert RecordOpKind = iota + 1
	// RecordPut stores Value under Name.
	RecordPut
	// RecordDelete removes Name.
	RecordDelete
	// RecordExpect requires Name to hold exactly Value (ErrAlreadyExists
	// when it holds another, ErrNotFound when absent): a read-modify-write
	// sends what it read, and fails if someone changed it since.
	RecordExpect
	// IndexAdd adds the member Value to the sorted index Name.
	IndexAdd
	// IndexRemove removes the member Value from the index Name.
	IndexRemove
)

// RecordOp is one step of an ApplyRecords batch.
type RecordOp struct {
	Kind  RecordOpKind
	Name  string
	Value []byte
}

func Insert(name string, value []byte) RecordOp {
	return RecordOp{Kind: RecordInsert, Name: name, Value: value}
}
func Set(name string, value []byte) RecordOp {
	return RecordOp{Kind: RecordPut, Name: name, Value: value}
}
func Remove(name string) RecordOp { return RecordOp{Kind: RecordDelete, Name: name} }
func Expect(name string, value []byte) RecordOp {
	return RecordOp{Kind: RecordExpect, Name: name, Value: value}
}
func AddToIndex(index, member string) RecordOp {
	return RecordOp{Kind: IndexAdd, Name: index, Value: []byte(member)}
}
func RemoveFromIndex(index, member string) RecordOp {
	return RecordOp{Kind: IndexRemove, Name: index, Value: []byte(member)}
}

// RecordError is a failed precondition of ApplyRecords: which record, and
// ErrAlreadyExists or ErrNotFound.
type RecordError struct {
	Name string
	Err  error
}

func (e *RecordError) Error() string { return "storage: record " + e.Name + ": " + e.Err.Error() }
func (e *RecordError) Unwrap() error { return e.Err }

// Batcher sends several independent operations in one round trip: a
// request that needs a pending authorization, a session and a throttle
// counter reads them together, and writes what belongs together at once.
// Both backends implement it. It is not part of Store, so that a Store
// wrapped by something that does not implement it (a test's failing or
// counting store) is used one call at a time, as before, rather than
// reached around.
type Batcher interface {
	// Batch runs ops in order and returns one result for each. Each op is
	// atomic as its single call is (an Incr keeps its fixed window, a Swap
	// or an ApplyFamily is all or nothing); the batch as a whole is not: a
	// write made meanwhile may show in some results and not in others, and
	// when the backend fails, some of the writes may have been made. Ops
	// on different keys may run in any order; ops on one key run in
	// order. The error is the first ErrUnavailable of any op (each result
	// keeps its own), so a caller that needs every op checks it alone.
	// No ops, no round trip.
	Batch(ctx context.Context, ops ...BatchOp) ([]BatchResult, error)
}

// BatchKind says what a BatchOp does.
type BatchKind uint8

const (
	// BatchGet is KV.Get of NS, Key; an absent key gives a nil Value and
	// no error, as in GetMany.
	BatchGet BatchKind = iota + 1
	// BatchPut is KV.Put of Value under NS, Key for TTL.
	BatchPut
	// BatchCreate is KV.Create: ErrAlreadyExists when the key is taken.
	BatchCreate
	// BatchTake is KV.Take; an absent key gives a nil Value and no error.
	BatchTake
	// BatchDelete is KV.Delete.
	BatchDelete
	// BatchIncr is KV.Incr with TTL as its window; the count is in N.
	BatchIncr
	// BatchSwap stores Value (nil: deletes the key) under NS, Key for TTL
	// only if the key holds exactly Old (nil: is absent); otherwise it
	// changes nothing and fails with ErrAlreadyExists when the key holds
	// another value, ErrNotFound when it is absent. It is the write half
	// of a read-modify-write whose read came earlier: of several Swaps
	// from the same Old, exactly one wins.
	BatchSwap
	// BatchGetRecords is Records.GetRecords of Names in Group, in Values.
	BatchGetRecords
	// BatchApplyFamily is Grants.ApplyFamily of Ops to Family, kept at
	// least until ExpiresAt.
	BatchApplyFamily
	// BatchFollow is Records.Follow of Names[0] in Group through Prefix;
	// Values holds the entry and the record.
	BatchFollow
)

// BatchOp is one operation of a Batch.
type BatchOp struct {
	Kind       BatchKind
	NS, Key    string
	Value, Old []byte
	TTL        time.Duration
	Group      string
	Names      []string
	Prefix     string
	Family     string
	ExpiresAt  time.Time
	Ops        []Op
}

// BatchResult is what one BatchOp gave.
type BatchResult struct {
	// Value is what BatchGet or BatchTake read: nil when absent, never nil
	// when present, even when empty.
	Value []byte
	// Values are what BatchGetRecords read, as GetRecords returns them,
	// or BatchFollow's entry and record.
	Values [][]byte
	// N is BatchIncr's count.
	N int64
	// Err is the op's own outcome: a precondition that failed
	// (ErrAlreadyExists, ErrNotFound), or the backend's failure.
	Err error
}

func GetOp(ns, key string) BatchOp { return BatchOp{Kind: BatchGet, NS: ns, Key: key} }
func PutOp(ns, key string, value []byte, ttl time.Duration) BatchOp {
	return BatchOp{Kind: BatchPut, NS: ns, Key: key, Value: value, TTL: ttl}
}
func CreateOp(ns, key string, value []byte, ttl time.Duration) BatchOp {
	return BatchOp{Kind: BatchCreate, NS: ns, Key: key, Value: value, TTL: ttl}
}
func TakeOp(ns, key string) BatchOp   { return BatchOp{Kind: BatchTake, NS: ns, Key: key} }
func DeleteOp(ns, key string) BatchOp { return BatchOp{Kind: BatchDelete, NS: ns, Key: key} }
func IncrOp(ns, key string, window time.Duration) BatchOp {
	return BatchOp{Kind: BatchIncr, NS: ns, Key: key, TTL: window}
}
func SwapOp(ns, key string, old, value []byte, ttl time.Duration) BatchOp {
	return BatchOp{Kind: BatchSwap, NS: ns, Key: key, Old: old, Value: value, TTL: ttl}
}
func GetRecordsOp(group string, names ...string) BatchOp {
	return BatchOp{Kind: BatchGetRecords, Group: group, Names: names}
}
func FollowOp(group, name, prefix string) BatchOp {
	return BatchOp{Kind: BatchFollow, Group: group, Names: []string{name}, Prefix: prefix}
}
func ApplyFamilyOp(family string, expiresAt time.Time, ops ...Op) BatchOp {
	return BatchOp{Kind: BatchApplyFamily, Family: family, ExpiresAt: expiresAt, Ops: ops}
}

package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	fositestorage "github.com/ory/fosite/storage"

	"github.com/stepup-dev/stepup/authz/storage"
)

// grantStore adapts grant families to fosite's storage interfaces. It is the
// only place where storage errors become fosite errors.
//
// Two things keep a token request to one read and one write of its family:
// reads come from a snapshot taken on first use within the request (see
// withSnapshot), and writes inside fosite's transactions are buffered and
// applied as one batch at Commit. Buffered writes stay correct under
// concurrency because every batch that consumes something (a code, a refresh
// token) carries a Spend, which exactly one batch can win.
type grantStore struct {
	grants  storage.Grants
	clients clientLookup
	// codeSignature maps an authorization code to its signature: fosite
	// names OpenID Connect records by the code itself.
	codeSignature func(code string) string
	// refreshTTL bounds a family whose refresh tokens do not expire.
	refreshTTL time.Duration
	now        func() time.Time
}

type clientLookup interface {
	GetClient(ctx context.Context, id string) (fosite.Client, error)
}

var (
	_ oauth2.CoreStorage                 = (*grantStore)(nil)
	_ oauth2.TokenRevocationStorage      = (*grantStore)(nil)
	_ pkce.PKCERequestStorage            = (*grantStore)(nil)
	_ openid.OpenIDConnectRequestStorage = (*grantStore)(nil)
	_ fositestorage.Transactional        = (*grantStore)(nil)
)

// Record names within a family.
const (
	kindCode    = "code:"
	kindPKCE    = "pkce:"
	kindOIDC    = "oidc:"
	kindAccess  = "at:"
	kindRefresh = "rt:"
)

// errConcurrentUse marks the loser of a race to spend the same code or
// refresh token: the token endpoint treats it as a replay.
var errConcurrentUse = errors.New("the token was used by a concurrent request")

type storedRequest struct {
	ID              string     `json:"id"`
	ClientID        string     `json:"client_id"`
	RequestedAt     time.Time  `json:"requested_at"`
	Scopes          []string   `json:"scopes,omitempty"`
	GrantedScopes   []string   `json:"granted_scopes,omitempty"`
	Audience        []string   `json:"audience,omitempty"`
	GrantedAudience []string   `json:"granted_audience,omitempty"`
	Form            url.Values `json:"form,omitempty"`
	Session         *Session   `json:"session"`
}

func encodeRequest(r fosite.Requester) ([]byte, error) {
	s, ok := r.GetSession().(*Session)
	if !ok {
		return nil, fmt.Errorf("cannot store a session of type %T", r.GetSession())
	}
	return json.Marshal(storedRequest{
		ID:              r.GetID(),
		ClientID:        r.GetClient().GetID(),
		RequestedAt:     r.GetRequestedAt(),
		Scopes:          r.GetRequestedScopes(),
		GrantedScopes:   r.GetGrantedScopes(),
		Audience:        r.GetRequestedAudience(),
		GrantedAudience: r.GetGrantedAudience(),
		Form:            r.GetRequestForm(),
		Session:         s,
	})
}

// decode reads a stored request; within a request with a snapshot, each
// record is decoded once.
func (g *grantStore) decode(ctx context.Context, family, name string, data []byte) (*storedRequest, error) {
	snap, _ := ctx.Value(snapshotKey).(*snapshot)
	key := family + "/" + name
	if snap != nil {
		if sr, ok := snap.decoded[key]; ok {
			return sr, nil
		}
	}
	sr := &storedRequest{Session: newSession()}
	if err := json.Unmarshal(data, sr); err != nil {
		return nil, fmt.Errorf("decoding a stored request: %w", err)
	}
	if snap != nil {
		snap.decoded[key] = sr
	}
	return sr, nil
}

// request rebuilds a fosite request with its own copy of the session, since
// fosite changes the sessions it is given.
func (g *grantStore) request(ctx context.Context, sr *storedRequest, form url.Values) (*fosite.Request, error) {
	client, err := g.clients.GetClient(ctx, sr.ClientID)
	if err != nil {
		// The client was removed from the config: its grants are dead.
		return nil, fosite.ErrNotFound.WithWrap(err)
	}
	return &fosite.Request{
		ID:                sr.ID,
		RequestedAt:       sr.RequestedAt,
		Client:            client,
		RequestedScope:    sr.Scopes,
		GrantedScope:      sr.GrantedScopes,
		RequestedAudience: sr.Audience,
		GrantedAudience:   sr.GrantedAudience,
		Form:              form,
		Session:           sr.Session.Clone(),
	}, nil
}

// A code's PKCE and OpenID Connect records are the code's own request with
// other form values kept, so they store only their form.
type formRecord struct {
	Form url.Values `json:"form"`
}

// toFosite translates a backend error. Unavailability passes through
// wrapped, so the HTTP edge can still answer 503.
func toFosite(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		return fosite.ErrNotFound.WithWrap(err)
	default:
		return err
	}
}

type ctxKey int

const (
	snapshotKey ctxKey = iota
	txKey
)

// snapshot is one request's view of the families it reads.
type snapshot struct {
	families map[string]map[string]storage.Entry
	decoded  map[string]*storedRequest
	// deferred are deletes of records that a later batch of this request
	// also removes (PKCE and OIDC records go with their code), held back to
	// save a round trip. If the request fails first, the records stay: they
	// are useless without the unspent code they belong to.
	deferred map[string][]storage.Op
}

// withSnapshot makes reads within ctx come from one snapshot per family.
func withSnapshot(ctx context.Context) context.Context {
	return context.WithValue(ctx, snapshotKey, &snapshot{
		families: map[string]map[string]storage.Entry{},
		decoded:  map[string]*storedRequest{},
		deferred: map[string][]storage.Op{},
	})
}

type tx struct {
	order   []string
	ops     map[string][]storage.Op
	expires map[string]time.Time
}

func (g *grantStore) family(ctx context.Context, family string) (map[string]storage.Entry, error) {
	snap, _ := ctx.Value(snapshotKey).(*snapshot)
	if snap != nil {
		if f, ok := snap.families[family]; ok {
			return f, nil
		}
	}
	f, err := g.grants.LoadFamily(ctx, family)
	if errors.Is(err, storage.ErrNotFound) {
		f, err = map[string]storage.Entry{}, nil
	}
	if err != nil {
		return nil, err
	}
	if snap != nil {
		snap.families[family] = f
	}
	return f, nil
}

// get returns the request stored under kind+digest of signature, and whether
// it has been spent.
func (g *grantStore) get(ctx context.Context, kind, signature string) (*fosite.Request, bool, error) {
	family, digest, ok := splitSignature(signature)
	if !ok {
		return nil, false, fosite.ErrNotFound
	}
	f, err := g.family(ctx, family)
	if err != nil {
		return nil, false, err
	}
	e, ok := f[kind+digest]
	if !ok {
		return nil, false, fosite.ErrNotFound
	}
	if kind == kindAccess {
		r, err := g.accessRequest(ctx, family, kind+digest, e.Value)
		return r, e.Spent, err
	}
	name, data, form := kind+digest, e.Value, url.Values(nil)
	if kind == kindPKCE || kind == kindOIDC {
		code, ok := f[kindCode+digest]
		if !ok {
			return nil, false, fosite.ErrNotFound
		}
		var fr formRecord
		if err := json.Unmarshal(e.Value, &fr); err != nil {
			return nil, false, fmt.Errorf("decoding a stored %s record: %w", kind, err)
		}
		name, data, form = kindCode+digest, code.Value, fr.Form
	}
	sr, err := g.decode(ctx, family, name, data)
	if err != nil {
		return nil, false, err
	}
	if form == nil {
		form = sr.Form
	}
	r, err := g.request(ctx, sr, form)
	if err != nil {
		return nil, false, err
	}
	return r, e.Spent, nil
}

// apply runs ops on a family now, or buffers them in the open transaction.
func (g *grantStore) apply(ctx context.Context, family string, expires time.Time, ops ...storage.Op) error {
	if t, ok := ctx.Value(txKey).(*tx); ok {
		if _, seen := t.ops[family]; !seen {
			t.order = append(t.order, family)
		}
		t.ops[family] = append(t.ops[family], ops...)
		if expires.After(t.expires[family]) {
			t.expires[family] = expires
		}
		return nil
	}
	if snap, ok := ctx.Value(snapshotKey).(*snapshot); ok {
		ops = append(snap.deferred[family], ops...)
		delete(snap.deferred, family)
	}
	return g.grants.ApplyFamily(ctx, family, expires, ops...)
}

func (g *grantStore) put(ctx context.Context, kind, signature string, r fosite.Requester, expires time.Time) error {
	family, digest, ok := splitSignature(signature)
	if !ok {
		return fmt.Errorf("malformed signature for %s record", kind)
	}
	var data []byte
	var err error
	switch kind {
	case kindPKCE, kindOIDC:
		data, err = json.Marshal(formRecord{Form: r.GetRequestForm()})
	case kindAccess:
		data, err = encodeAccess(r)
	default:
		data, err = encodeRequest(r)
	}
	if err != nil {
		return err
	}
	return g.apply(ctx, family, expires, storage.Put(kind+digest, data))
}

func (g *grantStore) expiry(r fosite.Requester, t fosite.TokenType, fallback time.Duration) time.Time {
	if exp := r.GetSession().GetExpiresAt(t); !exp.IsZero() {
		return exp
	}
	return g.now().Add(fallback)
}

// familyOp applies one op to the family named by signature.
func (g *grantStore) familyOp(ctx context.Context, signature string, op func(digest string) []storage.Op) error {
	family, digest, ok := splitSignature(signature)
	if !ok {
		return fosite.ErrNotFound
	}
	return toFosite(g.apply(ctx, family, time.Time{}, op(digest)...))
}

// deferDelete removes a record with the request's next batch if there is a
// snapshot, else now.
func (g *grantStore) deferDelete(ctx context.Context, kind, signature string) error {
	family, digest, ok := splitSignature(signature)
	if !ok {
		return nil
	}
	if snap, ok := ctx.Value(snapshotKey).(*snapshot); ok {
		snap.deferred[family] = append(snap.deferred[family], storage.Delete(kind+digest))
		return nil
	}
	return toFosite(g.grants.ApplyFamily(ctx, family, time.Time{}, storage.Delete(kind+digest)))
}

// Authorization codes.

func (g *grantStore) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	return g.put(ctx, kindCode, signature, r, g.expiry(r, fosite.AuthorizeCode, 10*time.Minute))
}

func (g *grantStore) GetAuthorizeCodeSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	r, spent, err := g.get(ctx, kindCode, signature)
	if err != nil {
		return nil, toFosite(err)
	}
	if spent {
		return r, fosite.ErrInvalidatedAuthorizeCode
	}
	return r, nil
}

// InvalidateAuthorizeCodeSession spends the code; its PKCE and OIDC records
// go with it.
func (g *grantStore) InvalidateAuthorizeCodeSession(ctx context.Context, signature string) error {
	return g.familyOp(ctx, signature, func(d string) []storage.Op {
		return []storage.Op{storage.Spend(kindCode + d), storage.Delete(kindPKCE + d), storage.Delete(kindOIDC + d)}
	})
}

// PKCE and OpenID Connect records of a code.

func (g *grantStore) CreatePKCERequestSession(ctx context.Context, signature string, r fosite.Requester) error {
	return g.put(ctx, kindPKCE, signature, r, g.expiry(r, fosite.AuthorizeCode, 10*time.Minute))
}

func (g *grantStore) GetPKCERequestSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	r, _, err := g.get(ctx, kindPKCE, signature)
	if err != nil {
		return nil, toFosite(err)
	}
	return r, nil
}

func (g *grantStore) DeletePKCERequestSession(ctx context.Context, signature string) error {
	return g.deferDelete(ctx, kindPKCE, signature)
}

func (g *grantStore) CreateOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) error {
	return g.put(ctx, kindOIDC, g.codeSignature(code), r, g.expiry(r, fosite.AuthorizeCode, 10*time.Minute))
}

func (g *grantStore) GetOpenIDConnectSession(ctx context.Context, code string, _ fosite.Requester) (fosite.Requester, error) {
	got, _, err := g.get(ctx, kindOIDC, g.codeSignature(code))
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, openid.ErrNoSessionFound
	}
	if err != nil {
		return nil, err
	}
	return got, nil
}

func (g *grantStore) DeleteOpenIDConnectSession(ctx context.Context, code string) error {
	return g.deferDelete(ctx, kindOIDC, g.codeSignature(code))
}

// Access tokens.

func (g *grantStore) CreateAccessTokenSession(ctx context.Context, signature string, r fosite.Requester) error {
	return g.put(ctx, kindAccess, signature, r, g.expiry(r, fosite.AccessToken, time.Hour))
}

func (g *grantStore) GetAccessTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	r, _, err := g.get(ctx, kindAccess, signature)
	if err != nil {
		return nil, toFosite(err)
	}
	return r, nil
}

// accessTokenActive reports whether the access token with this signature is
// still on record: neither revoked, nor retired by a refresh, nor expired.
// It reads the family but decodes nothing.
func (g *grantStore) accessTokenActive(ctx context.Context, signature string) (bool, error) {
	family, digest, ok := splitSignature(signature)
	if !ok {
		return false, nil
	}
	f, err := g.family(ctx, family)
	if err != nil {
		return false, err
	}
	_, ok = f[kindAccess+digest]
	return ok, nil
}

// accessTokenSession is the session an access token was issued with.
func (g *grantStore) accessTokenSession(ctx context.Context, signature string) (*Session, error) {
	r, _, err := g.get(ctx, kindAccess, signature)
	if err != nil {
		return nil, err
	}
	sess, ok := r.GetSession().(*Session)
	if !ok {
		return nil, fmt.Errorf("access token session of type %T", r.GetSession())
	}
	return sess, nil
}

func (g *grantStore) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	return g.familyOp(ctx, signature, func(d string) []storage.Op { return []storage.Op{storage.Delete(kindAccess + d)} })
}

// RevokeAccessToken removes every access token of the family.
func (g *grantStore) RevokeAccessToken(ctx context.Context, family string) error {
	if !validFamily(family) {
		return fosite.ErrNotFound
	}
	if err := g.revokeCertificates(ctx, family); err != nil {
		return err
	}
	return toFosite(g.apply(ctx, family, time.Time{}, storage.DeletePrefix(kindAccess)))
}

// Refresh tokens.

func (g *grantStore) CreateRefreshTokenSession(ctx context.Context, signature, _ string, r fosite.Requester) error {
	return g.put(ctx, kindRefresh, signature, r, g.expiry(r, fosite.RefreshToken, g.refreshTTL))
}

// GetRefreshTokenSession reads a spent (rotated or revoked) token as
// inactive, with its request, which is how fosite detects reuse.
func (g *grantStore) GetRefreshTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	r, spent, err := g.get(ctx, kindRefresh, signature)
	if err != nil {
		return nil, toFosite(err)
	}
	if spent {
		return r, fosite.ErrInactiveToken
	}
	return r, nil
}

func (g *grantStore) DeleteRefreshTokenSession(ctx context.Context, signature string) error {
	return g.familyOp(ctx, signature, func(d string) []storage.Op { return []storage.Op{storage.Delete(kindRefresh + d)} })
}

// RotateRefreshToken spends the presented token (exactly one concurrent
// rotation wins) and retires the access tokens issued before it.
func (g *grantStore) RotateRefreshToken(ctx context.Context, family, signature string) error {
	return g.familyOp(ctx, signature, func(d string) []storage.Op {
		return []storage.Op{storage.Spend(kindRefresh + d), storage.DeletePrefix(kindAccess)}
	})
}

// RevokeRefreshToken spends every refresh token of the family: presenting
// any of them again reads as reuse.
func (g *grantStore) RevokeRefreshToken(ctx context.Context, family string) error {
	if !validFamily(family) {
		return fosite.ErrNotFound
	}
	return toFosite(g.apply(ctx, family, time.Time{}, storage.SpendPrefix(kindRefresh)))
}

// Transactions buffer writes and apply them per family at Commit.

func (g *grantStore) BeginTX(ctx context.Context) (context.Context, error) {
	return context.WithValue(ctx, txKey, &tx{ops: map[string][]storage.Op{}, expires: map[string]time.Time{}}), nil
}

func (g *grantStore) Commit(ctx context.Context) error {
	t, ok := ctx.Value(txKey).(*tx)
	if !ok {
		return errors.New("commit without a transaction")
	}
	snap, _ := ctx.Value(snapshotKey).(*snapshot)
	for _, family := range t.order {
		ops := t.ops[family]
		if snap != nil {
			ops = append(snap.deferred[family], ops...)
			// The snapshot stays: the rest of this request (fosite's
			// OpenID Connect handler, which reads the code's record after
			// the commit removed it) sees the state it started from.
			delete(snap.deferred, family)
		}
		err := g.grants.ApplyFamily(ctx, family, t.expires[family], ops...)
		switch {
		case errors.Is(err, storage.ErrAlreadyExists), errors.Is(err, storage.ErrNotFound):
			// fosite answers a serialization failure on refresh with a
			// client error; the token endpoint turns it into a replay.
			return fosite.ErrSerializationFailure.WithWrap(fmt.Errorf("%w: %w", errConcurrentUse, err))
		case err != nil:
			return err
		}
	}
	return nil
}

func (g *grantStore) Rollback(context.Context) error { return nil }

package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/token/jwt"
)

// accessRecord is what the store keeps of an access token. The token is a
// signed JWT that carries its own claims; the record only has to make it
// revocable (it exists until the token is revoked, retired by a refresh or
// expired) and to answer what introspection and the API's checks ask
// without the token at hand: its client, scopes, audience, times and
// person, and when the login proved its factors (see verifyBearer). The
// full request, with its form and ID token claims, stays in the refresh
// token's record, where a grant has one.
//
// Keys are one letter and times are integers because there is one record
// per issued token: at a thousand client_credentials tokens a second and an
// hour's lifetime, every byte here is 3.6 MB of Redis.
type accessRecord struct {
	Client   string   `json:"c"`
	Scopes   []string `json:"s,omitempty"`
	Audience []string `json:"a,omitempty"`
	// Issued (fosite's requested_at, introspection's iat) and Expires are
	// Unix seconds, as the token states them.
	Issued   int64  `json:"i"`
	Expires  int64  `json:"e,omitempty"`
	Subject  string `json:"u,omitempty"`
	Username string `json:"n,omitempty"`
	// The login's times are Unix nanoseconds: verifyBearer compares them
	// with a sign-out within the same second.
	AuthTime int64            `json:"t,omitempty"`
	OTPAt    int64            `json:"o,omitempty"`
	KeyAt    int64            `json:"k,omitempty"`
	SSO      map[string]int64 `json:"p,omitempty"`
}

func encodeAccess(r fosite.Requester) ([]byte, error) {
	s, ok := r.GetSession().(*Session)
	if !ok {
		return nil, fmt.Errorf("cannot store a session of type %T", r.GetSession())
	}
	rec := accessRecord{
		Client:   r.GetClient().GetID(),
		Scopes:   r.GetGrantedScopes(),
		Audience: r.GetGrantedAudience(),
		Issued:   r.GetRequestedAt().Unix(),
		Subject:  s.Subject,
		Username: s.Username,
		AuthTime: unixNano(s.AuthTime()),
		OTPAt:    unixNano(s.OTPAt),
		KeyAt:    unixNano(s.KeyAt),
	}
	if exp := s.GetExpiresAt(fosite.AccessToken); !exp.IsZero() {
		rec.Expires = exp.Unix()
	}
	if len(s.SSO) > 0 {
		rec.SSO = make(map[string]int64, len(s.SSO))
		for p, at := range s.SSO {
			rec.SSO[p] = at.UnixNano()
		}
	}
	return json.Marshal(rec)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// legacyRecord tells a record written before accessRecord existed: a whole
// storedRequest, which always starts with its id.
func legacyRecord(data []byte) bool { return bytes.HasPrefix(data, []byte(`{"id":`)) }

// accessRequest rebuilds, from an access token's record name in family,
// the request fosite and the API read.
func (g *grantStore) accessRequest(ctx context.Context, family, name string, data []byte) (*fosite.Request, error) {
	if legacyRecord(data) {
		sr, err := g.decode(ctx, family, name, data)
		if err != nil {
			return nil, err
		}
		return g.request(ctx, sr, sr.Form)
	}
	var rec accessRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decoding an access token's record: %w", err)
	}
	client, err := g.clients.GetClient(ctx, rec.Client)
	if err != nil {
		// The client was removed from the config: its grants are dead.
		return nil, fosite.ErrNotFound.WithWrap(err)
	}
	s := &Session{Subject: rec.Subject, Username: rec.Username, OTPAt: fromUnixNano(rec.OTPAt), KeyAt: fromUnixNano(rec.KeyAt),
		Claims: &jwt.IDTokenClaims{Subject: rec.Subject, AuthTime: fromUnixNano(rec.AuthTime)}, Headers: &jwt.Headers{}}
	if rec.Expires != 0 {
		s.SetExpiresAt(fosite.AccessToken, time.Unix(rec.Expires, 0).UTC())
	}
	if len(rec.SSO) > 0 {
		s.SSO = make(map[string]time.Time, len(rec.SSO))
		for p, at := range rec.SSO {
			s.SSO[p] = fromUnixNano(at)
		}
	}
	return &fosite.Request{
		ID:                family,
		RequestedAt:       time.Unix(rec.Issued, 0).UTC(),
		Client:            client,
		RequestedScope:    rec.Scopes,
		GrantedScope:      rec.Scopes,
		RequestedAudience: rec.Audience,
		GrantedAudience:   rec.Audience,
		Session:           s,
	}, nil
}

// recordSubject is the person a family's record belongs to, if it says:
// an access token's record, a refresh token's or a code's request.
func recordSubject(data []byte) string {
	var r struct {
		Subject string `json:"u"`
		Session struct {
			Subject string `json:"sub"`
		} `json:"session"`
	}
	if json.Unmarshal(data, &r) != nil {
		return ""
	}
	if r.Subject != "" {
		return r.Subject
	}
	return r.Session.Subject
}

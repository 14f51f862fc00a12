package authz

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/token/jwt"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

type oneClient struct{ c fosite.Client }

func (o oneClient) GetClient(_ context.Context, id string) (fosite.Client, error) {
	if id != o.c.GetID() {
		return nil, fosite.ErrNotFound
	}
	return o.c, nil
}

// personRequest is a person's grant as a browser login makes it, with
// every field a record might lose.
func personRequest(client fosite.Client, now time.Time) *fosite.Request {
	at := now.Add(-90*time.Second + 123456789)
	s := &Session{Subject: "u_alice", Username: "alice", Grant: "authorization_code",
		Claims:  &jwt.IDTokenClaims{Subject: "u_alice", AuthTime: at, AuthenticationMethodsReferences: []string{"pwd", "otp", "mfa", "sso:acme"}, Nonce: "n-0123456789"},
		Headers: &jwt.Headers{}, OTPAt: at.Add(-time.Second), SSO: map[string]time.Time{"acme": at.Add(-2 * time.Second)}}
	s.SetExpiresAt(fosite.AccessToken, now.Add(15*time.Minute))
	s.SetExpiresAt(fosite.RefreshToken, now.Add(30*24*time.Hour))
	return &fosite.Request{ID: "2f1c4e7a-5d33-4e57-9a43-0b1f6d2c9e11", RequestedAt: now.Add(-time.Minute), Client: client,
		RequestedScope: []string{"openid", "offline_access", "profile"}, GrantedScope: []string{"openid", "offline_access", "profile"},
		GrantedAudience: []string{"https://api.example.com"}, Session: s,
		Form: map[string][]string{"grant_type": {"authorization_code"}, "code": {"stpc_0123456789abcdef0123456789abcdef"},
			"code_verifier": {"0123456789abcdef0123456789abcdef0123456789a"}, "redirect_uri": {"http://127.0.0.1:53682/callback"}}}
}

// TestAccessRecord: an access token's record keeps what introspection,
// revocation and the API read, exactly, in far fewer bytes than the
// request it replaces; and records written before it still read.
func TestAccessRecord(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	client := &fosite.DefaultClient{ID: "stepup-cli"}
	store := memory.New(memory.Config{Now: func() time.Time { return now }})
	g := &grantStore{grants: store, clients: oneClient{client}, now: func() time.Time { return now }}
	ctx := context.Background()
	want := personRequest(client, now)
	sig := want.ID + ".digest-of-the-token"
	if err := g.CreateAccessTokenSession(ctx, sig, want); err != nil {
		t.Fatal(err)
	}
	full, err := encodeRequest(want)
	if err != nil {
		t.Fatal(err)
	}
	legacySig := want.ID + ".digest-of-an-older-token"
	if err := store.ApplyFamily(ctx, want.ID, now.Add(time.Hour), storage.Put(kindAccess+"digest-of-an-older-token", full)); err != nil {
		t.Fatal(err)
	}
	f, err := store.LoadFamily(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	rec := f[kindAccess+"digest-of-the-token"].Value
	t.Logf("a person's access record: %d bytes (the whole request: %d)", len(rec), len(full))
	if len(rec) >= len(full)/3 {
		t.Errorf("the record is %d bytes, the request it replaces %d: %s", len(rec), len(full), rec)
	}
	for name, sig := range map[string]string{"record": sig, "legacy record": legacySig} {
		got, err := g.GetAccessTokenSession(ctx, sig, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		gs, ws := got.GetSession().(*Session), want.Session.(*Session)
		checks := map[string][2]any{
			"id":          {got.GetID(), want.ID},
			"client":      {got.GetClient().GetID(), client.ID},
			"scopes":      {strings.Join(got.GetGrantedScopes(), " "), strings.Join(want.GrantedScope, " ")},
			"audience":    {strings.Join(got.GetGrantedAudience(), " "), "https://api.example.com"},
			"iat":         {got.GetRequestedAt().Unix(), want.RequestedAt.Unix()},
			"exp":         {gs.GetExpiresAt(fosite.AccessToken).Unix(), ws.GetExpiresAt(fosite.AccessToken).Unix()},
			"sub":         {gs.GetSubject(), "u_alice"},
			"username":    {gs.GetUsername(), "alice"},
			"auth_time":   {gs.AuthTime().UnixNano(), ws.AuthTime().UnixNano()},
			"otp_at":      {gs.otpAt().UnixNano(), ws.OTPAt.UnixNano()},
			"sso":         {gs.SSO["acme"].UnixNano(), ws.SSO["acme"].UnixNano()},
			"subject of":  {recordSubject(f[kindAccess+"digest-of-the-token"].Value), "u_alice"},
			"legacy subj": {recordSubject(full), "u_alice"},
		}
		for what, c := range checks {
			if c[0] != c[1] {
				t.Errorf("%s: %s = %v, want %v", name, what, c[0], c[1])
			}
		}
	}

	// A client's own token: no person, no login.
	cc := &fosite.Request{ID: "0b6a6f0e-7c1e-4d7b-8f0a-3a1c2d4e5f60", RequestedAt: now, Client: &fosite.DefaultClient{ID: "demo-service"},
		GrantedScope: []string{"access.read"}, Session: &Session{Grant: "client_credentials", Claims: &jwt.IDTokenClaims{}, Headers: &jwt.Headers{}}}
	cc.Session.SetExpiresAt(fosite.AccessToken, now.Add(time.Hour))
	ccRec, err := encodeAccess(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a client_credentials access record: %d bytes: %s", len(ccRec), ccRec)
	var back accessRecord
	if err := json.Unmarshal(ccRec, &back); err != nil || back.Client != "demo-service" || back.Subject != "" || back.AuthTime != 0 || back.Expires != now.Add(time.Hour).Unix() {
		t.Errorf("client_credentials record %s: %+v (%v)", ccRec, back, err)
	}
	if len(ccRec) > 100 {
		t.Errorf("a client_credentials record of %d bytes: %s", len(ccRec), ccRec)
	}
}

package authz

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// apiToken is a person's token for automation, good until it expires. The
// grant api_token exchanges it for a short-lived access token that carries
// the amr in force when it was created, as far as that still holds: the
// SSO logins it names must be within their providers' maximum age, and an
// otp counts only while the person's MFA is the one it was proved with.
// The store keeps only an HMAC of the secret.
type apiToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	UserID    string    `json:"user_id"`
	AMR       []string  `json:"amr"`
	AuthTime  time.Time `json:"auth_time"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is zero in tokens made before API tokens expired; those
	// expire APITokenTTL after CreatedAt.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// SSO is when the creating login went through each provider.
	SSO map[string]time.Time `json:"sso,omitempty"`
	// OTPAt is when the creating login proved its otp, if it did.
	OTPAt time.Time `json:"otp_at,omitzero"`
	// KeyAt is when the creating login proved a passkey, if it did.
	KeyAt  time.Time `json:"key_at,omitzero"`
	Digest string    `json:"digest"`
}

func (t *apiToken) expiry(ttl time.Duration) time.Time {
	if t.ExpiresAt.IsZero() {
		return t.CreatedAt.Add(ttl)
	}
	return t.ExpiresAt
}

const (
	apiTokenNS     = "api-token"
	apiTokensOfNS  = "api-tokens-of"
	apiTokenPrefix = "stpa_"
	maxAPITokens   = 100
)

func (s *Server) apiTokenDigest(secret string) string {
	m := hmac.New(sha256.New, derive(s.cfg.Secret, "api tokens"))
	m.Write([]byte(secret))
	return b64.EncodeToString(m.Sum(nil))
}

type apiTokenView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	AMR       []string  `json:"amr"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Token     string    `json:"token,omitempty"`
}

func (s *Server) apiTokenView(t *apiToken) apiTokenView {
	return apiTokenView{ID: t.ID, Name: t.Name, AMR: t.AMR, CreatedAt: t.CreatedAt, ExpiresAt: t.expiry(s.cfg.APITokenTTL)}
}

// createAPIToken is POST /api/me/api-tokens {"name", "expires_in"}: the
// secret is shown once, in this answer. expires_in (seconds) may shorten
// the configured lifetime, not lengthen it.
func (s *Server) createAPIToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, ok := s.authenticate(w, r, useManage)
	if !ok {
		return
	}
	if c.claims.Grant == "api_token" {
		writeError(w, http.StatusForbidden, "access_denied", "API tokens are created by a person who logged in, not with another API token's access token.")
		return
	}
	var body struct {
		Name      string `json:"name"`
		ExpiresIn *int64 `json:"expires_in"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || strings.TrimSpace(body.Name) == "" || len(body.Name) > 100 {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"name": "…"}: a name of up to 100 characters, to tell your tokens apart (and optionally "expires_in": seconds).`)
		return
	}
	ttl := s.cfg.APITokenTTL
	if body.ExpiresIn != nil {
		if *body.ExpiresIn < 60 || *body.ExpiresIn > int64(ttl/time.Second) {
			writeError(w, http.StatusBadRequest, "invalid_request", "expires_in must be between 60 seconds and "+tokens.HumanDuration(ttl)+".")
			return
		}
		ttl = time.Duration(*body.ExpiresIn) * time.Second
	}
	sess, err := s.grants.accessTokenSession(ctx, c.signature)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	id, secret := randomString(12), randomString(32)
	t := apiToken{ID: id, Name: strings.TrimSpace(body.Name), UserID: c.user.ID, AMR: c.claims.AMR,
		AuthTime: time.Unix(c.claims.AuthTime, 0).UTC(), CreatedAt: now, ExpiresAt: now.Add(ttl),
		SSO: sess.SSO, OTPAt: sess.otpAt(), Digest: s.apiTokenDigest(secret)}
	if provedKey(c.claims.AMR) {
		t.KeyAt = sess.keyAt()
	}
	err = s.store.Update(ctx, apiTokensOfNS, t.UserID, 0, func(old []byte) ([]byte, error) {
		var ids []string
		if old != nil {
			if err := json.Unmarshal(old, &ids); err != nil {
				return nil, err
			}
		}
		if len(ids) >= maxAPITokens {
			return nil, errTooManyTokens
		}
		return json.Marshal(append(ids, id))
	})
	if errors.Is(err, errTooManyTokens) {
		writeError(w, http.StatusConflict, "too_many_tokens", "You have 100 API tokens; delete some first.")
		return
	}
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	data, _ := json.Marshal(t)
	// Kept a week past its expiry, so that using it then says "expired"
	// rather than "not valid".
	if err := s.store.Put(ctx, apiTokenNS, id, data, ttl+7*24*time.Hour); err != nil {
		s.storeOrInternal(w, err)
		return
	}
	view := s.apiTokenView(&t)
	view.Token = apiTokenPrefix + id + "." + secret
	writeJSON(w, http.StatusCreated, view)
}

var errTooManyTokens = errors.New("too many API tokens")

func (s *Server) apiTokensOf(ctx context.Context, userID string) ([]apiToken, error) {
	data, err := s.store.Get(ctx, apiTokensOfNS, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := json.Unmarshal(data, &ids); err != nil {
		return nil, err
	}
	var out []apiToken
	for _, id := range ids {
		t, err := s.apiToken(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *t)
	}
	return out, nil
}

func (s *Server) apiToken(ctx context.Context, id string) (*apiToken, error) {
	data, err := s.store.Get(ctx, apiTokenNS, id)
	if err != nil {
		return nil, err
	}
	var t apiToken
	return &t, json.Unmarshal(data, &t)
}

// listAPITokens is GET /api/me/api-tokens; secrets are never shown again.
func (s *Server) listAPITokens(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r, usePerson)
	if !ok {
		return
	}
	list, err := s.apiTokensOf(r.Context(), c.user.ID)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	out := []apiTokenView{}
	for _, t := range list {
		out = append(out, s.apiTokenView(&t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

// deleteAPIToken is DELETE /api/me/api-tokens/{id}.
func (s *Server) deleteAPIToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, ok := s.authenticate(w, r, usePerson)
	if !ok {
		return
	}
	userID := c.user.ID
	id := r.PathValue("id")
	t, err := s.apiToken(ctx, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && t.UserID != userID) {
		writeError(w, http.StatusNotFound, "not_found", "You have no API token with that id.")
		return
	}
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	if err := s.store.Delete(ctx, apiTokenNS, id); err != nil {
		s.storeOrInternal(w, err)
		return
	}
	err = s.store.Update(ctx, apiTokensOfNS, userID, 0, func(old []byte) ([]byte, error) {
		var ids []string
		if old != nil {
			if err := json.Unmarshal(old, &ids); err != nil {
				return nil, err
			}
		}
		return json.Marshal(slices.DeleteFunc(ids, func(x string) bool { return x == id }))
	})
	if err != nil {
		s.log.Error("api token index", "user", userID, "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
}

// apiTokenGrant is the token endpoint's grant_type=api_token: one API
// token in, one short-lived access token out, no refresh token.
type apiTokenGrant struct {
	srv *Server
	*oauth2.HandleHelper
	lifespan time.Duration
}

func (g *apiTokenGrant) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	return r.GetGrantTypes().ExactOne("api_token")
}

func (g *apiTokenGrant) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool { return false }

func (g *apiTokenGrant) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !g.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	if !r.GetClient().GetGrantTypes().Has("api_token") {
		return fosite.ErrUnauthorizedClient.WithHint("This client may not use grant_type=api_token.")
	}
	raw := r.GetRequestForm().Get("api_token")
	id, secret, ok := strings.Cut(strings.TrimPrefix(raw, apiTokenPrefix), ".")
	if !strings.HasPrefix(raw, apiTokenPrefix) || !ok || len(id) != 16 {
		return fosite.ErrInvalidGrant.WithHint("api_token is missing or malformed.")
	}
	t, err := g.srv.apiToken(ctx, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !hmac.Equal([]byte(t.Digest), []byte(g.srv.apiTokenDigest(secret)))) {
		return fosite.ErrInvalidGrant.WithHint("The API token is not valid or was deleted.")
	}
	if err != nil {
		return err
	}
	u, err := g.srv.user(ctx, t.UserID)
	if err != nil {
		return err
	}
	if u == nil {
		return fosite.ErrInvalidGrant.WithHint("The API token's person no longer exists or was disabled.")
	}
	now := g.srv.cfg.Now()
	if exp := t.expiry(g.srv.cfg.APITokenTTL); !now.Before(exp) {
		return fosite.ErrInvalidGrant.WithHintf("The API token %q expired on %s: create a new one.", truncate(t.Name, 100), exp.UTC().Format("2 January 2006"))
	}
	amr, otpAt, keyAt, err := g.stillHeld(ctx, t, now)
	if err != nil {
		return err
	}
	sess, ok := r.GetSession().(*Session)
	if !ok {
		return fosite.ErrServerError
	}
	sess.Subject, sess.Username, sess.Grant = u.ID, u.Username, "api_token"
	sess.Claims.Subject, sess.Claims.AuthTime = u.ID, t.AuthTime
	sess.Claims.AuthenticationMethodsReferences = amr
	sess.SSO, sess.OTPAt, sess.KeyAt = t.SSO, otpAt, keyAt
	sess.SetExpiresAt(fosite.AccessToken, g.srv.cfg.Now().Add(g.lifespan))
	for _, scope := range r.GetRequestedScopes() {
		if !r.GetClient().GetScopes().Has(scope) {
			return fosite.ErrInvalidScope.WithHintf("The client may not request scope %q.", truncate(scope, 64))
		}
		r.GrantScope(scope)
	}
	return nil
}

// stillHeld is the part of the API token's amr that holds today. An SSO
// login past its provider's maximum age fails the grant, as a refresh
// would; an otp proved before the person turned MFA off or reset it is
// dropped, and mfa with it; so is a key proved before the person removed a
// passkey, with what it added.
func (g *apiTokenGrant) stillHeld(ctx context.Context, t *apiToken, now time.Time) (amr []string, otpAt, keyAt time.Time, err error) {
	for _, m := range t.AMR {
		id, ok := strings.CutPrefix(m, tokens.SSOPrefix)
		if !ok {
			continue
		}
		at, ok := t.SSO[id]
		if !ok {
			at = t.AuthTime // tokens made before SSO times were kept
		}
		p, ok := g.srv.sso.byID[id]
		if !ok || (p.MaxSessionAge > 0 && now.Sub(at) > p.MaxSessionAge) {
			return nil, time.Time{}, time.Time{}, fosite.ErrInvalidGrant.WithHintf("SSO session has expired: sign in through %s again and create a new API token.", id)
		}
	}
	amr = t.AMR
	if provedKey(amr) {
		keyAt = t.KeyAt
		if keyAt.IsZero() {
			keyAt = t.AuthTime // tokens made before KeyAt was kept
		}
		valid, err := g.srv.passkeys.keyStillValid(ctx, t.UserID, keyAt)
		if err != nil {
			return nil, time.Time{}, time.Time{}, err
		}
		if !valid {
			amr, keyAt = withoutKey(amr), time.Time{}
		}
	}
	if !slices.Contains(amr, tokens.MethodOTP) {
		return amr, time.Time{}, keyAt, nil
	}
	otpAt = t.OTPAt
	if otpAt.IsZero() {
		otpAt = t.AuthTime // tokens made before OTPAt was kept
	}
	valid, err := g.srv.mfa.otpStillValid(ctx, t.UserID, otpAt)
	if err != nil || valid {
		return amr, otpAt, keyAt, err
	}
	kept := slices.DeleteFunc(slices.Clone(amr), func(m string) bool { return m == tokens.MethodOTP || m == tokens.MethodMFA })
	return tokens.AMR(kept, false), time.Time{}, keyAt, nil
}

func (g *apiTokenGrant) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !g.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	_, err := g.IssueAccessToken(ctx, g.lifespan, r, resp)
	return err
}

package authz

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/ory/fosite"
)

// token is the token endpoint. Reads of grant families come from one
// snapshot per request and writes are applied in one batch (see grantStore),
// so a code exchange or a refresh is one read and one write of the store.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	ctx := withSnapshot(r.Context())
	// fosite answers a grant type nobody handles with invalid_request;
	// RFC 6749 §5.2 names the error.
	if gt := r.PostFormValue("grant_type"); gt != "" && !slices.Contains(grantTypes, gt) {
		writeError(w, http.StatusBadRequest, "unsupported_grant_type",
			"grant_type must be one of "+strings.Join(grantTypes, ", ")+".")
		return
	}
	sess := newSession()
	ar, err := s.oauth.NewAccessRequest(ctx, r, sess)
	if err != nil {
		s.tokenError(r.Context(), w, ar, err)
		return
	}
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		// The client acts for itself (RFC 9068 §2.2: sub is the client).
		sess.Subject, sess.Grant = ar.GetClient().GetID(), "client_credentials"
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
		for _, aud := range ar.GetRequestedAudience() {
			ar.GrantAudience(aud)
		}
	}
	resp, err := s.oauth.NewAccessResponse(ctx, ar)
	if err != nil {
		s.tokenError(r.Context(), w, ar, err)
		return
	}
	s.oauth.WriteAccessResponse(ctx, w, ar, resp)
	s.metrics.tokens.WithLabelValues(ar.GetGrantTypes()[0]).Inc()
}

var grantTypes = []string{"authorization_code", "refresh_token", "client_credentials", "api_token"}

func (s *Server) tokenError(ctx context.Context, w http.ResponseWriter, ar fosite.AccessRequester, err error) {
	switch {
	case isUnavailable(err):
		s.unavailable(w, err)
		return
	case errors.Is(err, errConcurrentUse):
		// Two requests spent the same code or refresh token at once; only
		// one won. The other is a replay, whoever sent it: revoke the grant.
		if ar != nil && validFamily(ar.GetID()) {
			if rerr := errors.Join(s.grants.RevokeAccessToken(ctx, ar.GetID()), s.grants.RevokeRefreshToken(ctx, ar.GetID())); rerr != nil {
				s.log.Error("revoking a replayed grant", "family", ar.GetID(), "err", rerr)
			}
		}
		err = fosite.ErrInvalidGrant.WithHint("The authorization code or refresh token was already used. Every token issued from it has been revoked.")
	}
	if ar == nil {
		ar = fosite.NewAccessRequest(newSession())
	}
	if rfc := fosite.ErrorToRFC6749Error(err); rfc.CodeField >= 500 {
		s.log.Error("token endpoint", "err", err, "debug", rfc.DebugField)
	}
	s.oauth.WriteAccessError(ctx, w, ar, err)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	err := s.oauth.NewRevocationRequest(r.Context(), r)
	if isUnavailable(err) {
		s.unavailable(w, err)
		return
	}
	s.oauth.WriteRevocationResponse(r.Context(), w, err)
}

// introspect is RFC 7662 for confidential clients that authenticate as
// themselves. fosite would also take any active access token as the
// caller's credential, which would let any relying party, or anyone holding
// a person's token, ask whether other clients' tokens are live and whose
// they are.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+s.cfg.Issuer+`"`)
		writeError(w, http.StatusUnauthorized, "invalid_client",
			"Introspection takes a confidential client's own credentials (HTTP Basic or client_secret_post), not a bearer token.")
		return
	}
	resp, err := s.oauth.NewIntrospectionRequest(r.Context(), r, newSession())
	if isUnavailable(err) {
		s.unavailable(w, err)
		return
	}
	if err != nil {
		s.oauth.WriteIntrospectionError(r.Context(), w, err)
		return
	}
	s.oauth.WriteIntrospectionResponse(r.Context(), w, resp)
}

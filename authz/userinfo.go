package authz

import (
	"errors"
	"net/http"

	"github.com/ory/fosite"
)

// userinfo answers OpenID Connect userinfo, plus whether the person has MFA
// or an SSO identity, so a client can tell what a step-up would involve.
func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	token := fosite.AccessTokenFromRequest(r)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.cfg.Issuer+`"`)
		writeError(w, http.StatusUnauthorized, "invalid_request", "Send the access token as 'Authorization: Bearer <token>'.")
		return
	}
	_, ar, err := s.oauth.IntrospectToken(r.Context(), token, fosite.AccessToken, newSession(), "openid")
	if isUnavailable(err) {
		s.unavailable(w, err)
		return
	}
	if err != nil {
		if errors.Is(err, fosite.ErrScopeNotGranted) {
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="openid"`)
			writeError(w, http.StatusForbidden, "insufficient_scope", "The access token was not granted the openid scope.")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "invalid_token", "The access token is expired, revoked or not valid.")
		return
	}
	sess, _ := ar.GetSession().(*Session)
	u, ok := s.users.get(sess.GetSubject())
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "invalid_token", "The token's user no longer exists.")
		return
	}
	enrolled, err := s.mfa.enabled(r.Context(), u.ID)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	links, err := s.linkedProviders(r.Context(), u.ID)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	claims := map[string]any{
		"sub":         u.ID,
		"mfa_enabled": enrolled,
		"sso_enabled": len(links) > 0,
	}
	scopes := ar.GetGrantedScopes()
	if scopes.Has("profile") {
		claims["preferred_username"] = u.Username
		if u.Name != "" {
			claims["name"] = u.Name
		}
	}
	if scopes.Has("email") && u.Email != "" {
		claims["email"] = u.Email
		claims["email_verified"] = u.EmailVerified
	}
	writeJSON(w, http.StatusOK, claims)
}

package authz

import (
	"net/http"

	"github.com/ory/fosite"
)

// userinfo answers OpenID Connect userinfo, plus whether the person has MFA
// or an SSO identity, so a client can tell what a step-up would involve.
//
// Any client's access token with the scope openid works here, as OpenID
// Connect wants, but only one meant for Stepup itself (aud): a token a
// client got for another resource server does not.
func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r, useUserinfo)
	if !ok {
		return
	}
	u := c.user
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
	scopes := fosite.Arguments(c.claims.Scope)
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

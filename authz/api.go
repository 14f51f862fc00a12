package authz

import (
	"errors"
	"net/http"
	"strings"

	"github.com/ory/fosite"
)

// Org is an organization and its members, from the config.
type Org struct {
	ID, Name string
	// MFARequired and SSOProvider seed what the organization demands of
	// every member's authentication; see orgSecurity.
	MFARequired bool
	SSOProvider string
	Members     []Member
}

func (o *Org) role(userID string) (string, bool) {
	for _, m := range o.Members {
		if m.UserID == userID {
			return m.Role, true
		}
	}
	return "", false
}

func (s *Server) org(id string) (*Org, bool) {
	for i := range s.cfg.Orgs {
		if s.cfg.Orgs[i].ID == id {
			return &s.cfg.Orgs[i], true
		}
	}
	return nil, false
}

// Member is a user's role in an organization: owner, admin or member.
type Member struct {
	UserID, Role string
}

// bearer authenticates an API request by its access token: signature,
// expiry and revocation, and the scopes given. It answers the failure itself.
func (s *Server) bearer(w http.ResponseWriter, r *http.Request, scopes ...string) (*Session, bool) {
	token := fosite.AccessTokenFromRequest(r)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.cfg.Issuer+`"`)
		writeError(w, http.StatusUnauthorized, "invalid_request", "Send an access token as 'Authorization: Bearer <token>'.")
		return nil, false
	}
	_, ar, err := s.oauth.IntrospectToken(r.Context(), token, fosite.AccessToken, newSession(), scopes...)
	if isUnavailable(err) {
		s.unavailable(w, err)
		return nil, false
	}
	if errors.Is(err, fosite.ErrScopeNotGranted) || errors.Is(err, fosite.ErrInvalidScope) {
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+strings.Join(scopes, " ")+`"`)
		writeError(w, http.StatusForbidden, "insufficient_scope", "The access token lacks the scope "+strings.Join(scopes, " ")+".")
		return nil, false
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "invalid_token", "The access token is expired, revoked or not valid.")
		return nil, false
	}
	sess, ok := ar.GetSession().(*Session)
	return sess, ok
}

type orgRole struct {
	ID   string `json:"id"`
	Role string `json:"role"`
}

// me is GET /api/me: who the token's person is and whether they have MFA.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.bearer(w, r)
	if !ok {
		return
	}
	u, ok := s.users.get(sess.Subject)
	if !ok {
		writeError(w, http.StatusForbidden, "access_denied", "This token does not belong to a person (it was issued to a client).")
		return
	}
	enrolled, err := s.mfa.enabled(r.Context(), u.ID)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	orgs := []orgRole{}
	for _, o := range s.cfg.Orgs {
		for _, m := range o.Members {
			if m.UserID == u.ID {
				orgs = append(orgs, orgRole{ID: o.ID, Role: m.Role})
			}
		}
	}
	links, err := s.linkedProviders(r.Context(), u.ID)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": u.ID, "username": u.Username, "email": u.Email,
		"mfa_enabled": enrolled, "sso_providers": links, "orgs": orgs,
	})
}

// access is GET /api/orgs/{org}/access/{user_id}, for resource servers
// acting with their own client credentials (scope access.read): is the
// person a member, and what does the organization demand of their
// authentication.
func (s *Server) access(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.bearer(w, r, "access.read"); !ok {
		return
	}
	o, ok := s.org(r.PathValue("org"))
	var role string
	if ok {
		role, ok = o.role(r.PathValue("user_id"))
	}
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{"member": false})
		return
	}
	sec, err := s.security(r.Context(), o)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"member": true, "role": role, "requirements": sec.requirements()})
}

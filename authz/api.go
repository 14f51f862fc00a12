package authz

import (
	"net/http"
	"strings"

	"github.com/ory/fosite"
)

// Org is an organization and its members, from the config.
type Org struct {
	ID, Name string
	Members  []Member
}

// Member is a user's role in an organization: owner, admin or member.
type Member struct {
	UserID, Role string
}

// bearer authenticates an API request by its access token: signature,
// expiry and revocation. It answers the failure itself.
func (s *Server) bearer(w http.ResponseWriter, r *http.Request) (*Session, bool) {
	token := fosite.AccessTokenFromRequest(r)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.cfg.Issuer+`"`)
		writeError(w, http.StatusUnauthorized, "invalid_request", "Send an access token as 'Authorization: Bearer <token>'.")
		return nil, false
	}
	_, ar, err := s.oauth.IntrospectToken(r.Context(), token, fosite.AccessToken, newSession())
	if isUnavailable(err) {
		s.unavailable(w, err)
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
	writeJSON(w, http.StatusOK, map[string]any{
		"id": u.ID, "username": u.Username, "email": u.Email,
		"mfa_enabled": enrolled, "sso_providers": ssoProviders(sess), "orgs": orgs,
	})
}

// ssoProviders lists the providers a token's login went through.
func ssoProviders(sess *Session) []string {
	out := []string{}
	for _, m := range sess.AMR() {
		if p, ok := strings.CutPrefix(m, "sso:"); ok {
			out = append(out, p)
		}
	}
	return out
}

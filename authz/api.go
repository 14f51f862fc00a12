package authz

import (
	"net/http"

	"github.com/stepup-dev/stepup/tokens"
)

// Org is an organization and its members as the config seeds them; at run
// time the directory has them.
type Org struct {
	ID, Name string
	// MFARequired and SSOProvider seed what the organization demands of
	// every member's authentication; see orgSecurity.
	MFARequired bool
	// PhishingResistant requires MFA with a passkey or security key.
	PhishingResistant bool
	SSOProvider       string
	Members           []Member
}

// Member is a user's role in an organization: owner, admin or member.
type Member struct {
	UserID, Role string
}

type orgRole struct {
	ID   string `json:"id"`
	Role string `json:"role"`
}

// me is GET /api/me: who the token's person is and whether they have MFA.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r, usePerson)
	if !ok {
		return
	}
	u := c.user
	enrolled, err := s.mfa.enabled(r.Context(), u.ID)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	memberships, err := s.people.OrgsOf(r.Context(), u.ID)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	orgs := []orgRole{}
	for _, m := range memberships {
		orgs = append(orgs, orgRole{ID: m.OrgID, Role: m.Role})
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
	if _, ok := s.authenticate(w, r, tokenUse{scopes: []string{"access.read"}}); !ok {
		return
	}
	o, role, err := s.orgOf(r.Context(), r.PathValue("org"), r.PathValue("user_id"))
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	if o == nil {
		writeJSON(w, http.StatusOK, tokens.Access{Member: false})
		return
	}
	writeJSON(w, http.StatusOK, tokens.Access{Member: true, Role: role, Requirements: securityOf(o).requirements()})
}

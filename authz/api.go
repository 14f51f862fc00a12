package authz

import (
	"net/http"
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
	if _, ok := s.authenticate(w, r, tokenUse{scopes: []string{"access.read"}}); !ok {
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

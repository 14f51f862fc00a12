package authz

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"

	"github.com/stepup-dev/stepup/authz/directory"
)

// Organizations and their members at run time: creating an organization,
// changing a member's role, removing a member, leaving. The directory keeps
// the one rule that needs atomicity (an organization keeps an owner);
// who may do what is decided here:
//   - anyone may leave; owners and admins manage members and admins;
//   - only owners make, demote or remove owners.

var orgID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

// createOrg is POST /api/orgs {"id", "name"}: the caller becomes its owner.
func (s *Server) createOrg(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r, useManage)
	if !ok {
		return
	}
	var body struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request",
			`Send {"id": "…", "name": "…"}: an id of 2 to 63 lower-case letters, digits and '-', starting with a letter or digit, and a name of up to 100 characters.`)
		return
	}
	created, err := s.newOrg(r.Context(), c.user, body.ID, body.Name)
	if err != nil {
		s.answerAPI(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, orgView(created))
}

func orgView(o *directory.Org) map[string]any {
	return map[string]any{"id": o.ID, "name": o.Name, "mfa_required": o.MFARequired, "phishing_resistant": o.PhishingResistant, "sso_provider": o.SSOProvider}
}

// auditOrLog records an event; the change it describes is made already,
// so a failure to record it is logged rather than undone.
func (s *Server) auditOrLog(ctx context.Context, org, actor, action string, detail map[string]any) {
	if err := s.audit(ctx, org, auditEvent{At: s.cfg.Now().UTC(), Actor: actor, Action: action, Detail: detail}); err != nil {
		s.log.Error("audit", "org", org, "action", action, "err", err)
	}
}

// mayManage says whether the caller (role) may change a member from role
// from to role to ("" for removal), or why not.
func mayManage(caller, from, to string) string {
	switch {
	case caller != directory.RoleOwner && caller != directory.RoleAdmin:
		return "Only the organization's owners and admins manage its members; your role is " + caller + "."
	case caller != directory.RoleOwner && (from == directory.RoleOwner || to == directory.RoleOwner):
		return "Only owners make, demote or remove owners; your role is " + caller + "."
	}
	return ""
}

// setMemberRole is PATCH /api/orgs/{org}/members/{user} {"role"}.
func (s *Server) setMemberRole(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, ok := s.orgCaller(w, r, useManage)
	if !ok {
		return
	}
	var body struct {
		Role string `json:"role"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || !directory.ValidRole(body.Role) {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"role": "owner"}, "admin" or "member".`)
		return
	}
	u, _, err := s.changeRole(ctx, q, r.PathValue("user"), body.Role)
	if err != nil {
		s.answerAPI(w, err)
		return
	}
	views, err := s.memberViews(ctx, q.org.ID, []directory.Member{{User: *u, Role: body.Role}})
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, views[0])
}

// removeMember is DELETE /api/orgs/{org}/members/{user}; on oneself, it is
// leaving, which any member may do.
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	q, ok := s.orgCaller(w, r, useManage)
	if !ok {
		return
	}
	if _, err := s.dropMember(r.Context(), q, r.PathValue("user")); err != nil {
		s.answerAPI(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// pageParams reads the after and limit query parameters of a paged list: ok=false
// (answered) when they are bad; paged=false when neither is given.
func pageParams(w http.ResponseWriter, r *http.Request) (after string, limit int, paged, ok bool) {
	q := r.URL.Query()
	after, limit = q.Get("after"), 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			writeError(w, http.StatusBadRequest, "invalid_request", "limit must be a number from 1 to 500.")
			return "", 0, false, false
		}
		limit = n
	}
	return after, limit, q.Has("after") || q.Has("limit"), true
}

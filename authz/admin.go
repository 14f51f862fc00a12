package authz

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/stepup-dev/stepup/authz/directory"
)

// Instance administrators (Config.Admins) see every person and can disable
// one: a disabled person's sessions, refresh tokens, API tokens and access
// tokens stop working at once, because each of those paths reads the person
// (s.user) and finds no one.

// admin admits an instance administrator's management call; it answers a
// refusal itself.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) (*caller, bool) {
	c, ok := s.authenticate(w, r, useManage)
	if !ok {
		return nil, false
	}
	if !slices.Contains(s.cfg.Admins, c.user.ID) {
		writeError(w, http.StatusForbidden, "access_denied", "Only the instance's administrators (admins in the config) can do this.")
		return nil, false
	}
	return c, true
}

type userView struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Email    string `json:"email"`
	Disabled bool   `json:"disabled"`
	Created  string `json:"created"`
}

func viewOf(u *User) userView {
	return userView{ID: u.ID, Username: u.Username, Email: u.Email, Disabled: u.Disabled, Created: u.Created.UTC().Format("2006-01-02T15:04:05Z")}
}

// adminUsers is GET /api/admin/users[?after=ID&limit=N]: a page of people,
// with "next" when there may be more.
func (s *Server) adminUsers(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.admin(w, r); !ok {
		return
	}
	after, limit, _, ok := pageParams(w, r)
	if !ok {
		return
	}
	page, err := s.people.ListUsers(r.Context(), after, limit)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	out := []userView{}
	for _, u := range page {
		out = append(out, viewOf(u))
	}
	answer := map[string]any{"users": out}
	if len(page) == limit {
		answer["next"] = page[len(page)-1].ID
	}
	writeJSON(w, http.StatusOK, answer)
}

// adminUpdateUser is PATCH /api/admin/users/{user} {"disabled"}.
func (s *Server) adminUpdateUser(w http.ResponseWriter, r *http.Request) {
	c, ok := s.admin(w, r)
	if !ok {
		return
	}
	var body struct {
		Disabled *bool `json:"disabled"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Disabled == nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"disabled": true} or {"disabled": false}.`)
		return
	}
	// The path names a person by id, or failing that by username; who it
	// is is settled before the self check, so a username cannot slip by it.
	ref := r.PathValue("user")
	target, err := s.people.User(r.Context(), ref) // disabled or not
	if errors.Is(err, directory.ErrNotFound) {
		target, err = s.people.ByUsername(r.Context(), ref)
	}
	var u *User
	switch {
	case err != nil:
	case target.ID == c.user.ID && *body.Disabled:
		writeError(w, http.StatusConflict, "self", "You cannot disable your own account.")
		return
	default:
		u, err = s.people.UpdateUser(r.Context(), target.ID, func(u *User) error { u.Disabled = *body.Disabled; return nil })
	}
	switch {
	case errors.Is(err, directory.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "There is no person "+truncate(ref, 64)+".")
		return
	case err != nil:
		s.storeOrInternal(w, err)
		return
	}
	if err := s.revokeCertificates(r.Context(), certificatesOfDisabled(u)); err != nil {
		s.storeOrInternal(w, err)
		return
	}
	s.log.Info("instance administrator changed a person", "admin", c.user.ID, "user", u.ID, "disabled", u.Disabled)
	writeJSON(w, http.StatusOK, viewOf(u))
}

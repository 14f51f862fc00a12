package authz

import (
	"context"
	"errors"
	"net/http"
	"net/mail"
	"strings"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
)

// The changes to an organization that both the API and the console make.
// Each returns a *declined for what the caller can act on, and any other
// error for the store; the API writes it as its JSON error, a page
// as its message.

type declined struct {
	status        int
	code, message string
}

func (e *declined) Error() string { return e.message }

func decline(status int, code, message string) error {
	return &declined{status: status, code: code, message: message}
}

// answerAPI writes err as the API's JSON error.
func (s *Server) answerAPI(w http.ResponseWriter, err error) {
	var rf *declined
	if errors.As(err, &rf) {
		writeError(w, rf.status, rf.code, rf.message)
		return
	}
	s.storeOrInternal(w, err)
}

// newOrg creates an organization whose owner is the creator.
func (s *Server) newOrg(ctx context.Context, creator *User, id, name string) (*directory.Org, error) {
	if !orgID.MatchString(id) || len(name) > 100 {
		return nil, decline(http.StatusBadRequest, "invalid_request",
			"The id must be 2 to 63 lower-case letters, digits and '-', starting with a letter or digit; the name up to 100 characters.")
	}
	if name = strings.TrimSpace(name); name == "" {
		name = id
	}
	switch err := s.people.CreateOrg(ctx, directory.Org{ID: id, Name: name}, creator.ID); {
	case errors.Is(err, directory.ErrIDTaken):
		return nil, decline(http.StatusConflict, "org_exists", "There is already an organization "+id+"; choose another id.")
	case err != nil:
		return nil, err
	}
	s.auditOrLog(ctx, id, creator.ID, "org.create", map[string]any{"name": name})
	return s.people.Org(ctx, id)
}

// findMember is the member ref names, by id or username.
func (s *Server) findMember(ctx context.Context, q *orgRequest, ref string) (*User, string, error) {
	u, err := s.user(ctx, ref)
	if err == nil && u == nil {
		u, err = s.people.ByUsername(ctx, ref)
		if errors.Is(err, directory.ErrNotFound) {
			u, err = nil, nil
		}
	}
	if err != nil {
		return nil, "", err
	}
	role := ""
	if u != nil {
		if role, err = s.people.Role(ctx, q.org.ID, u.ID); err != nil && !errors.Is(err, directory.ErrNotMember) {
			return nil, "", err
		}
	}
	if role == "" {
		return nil, "", decline(http.StatusNotFound, "not_found", truncate(ref, 64)+" is not a member of "+q.org.ID+".")
	}
	return u, role, nil
}

// changeRole gives the member ref the role; it returns them and their
// role before.
func (s *Server) changeRole(ctx context.Context, q *orgRequest, ref, role string) (*User, string, error) {
	if !directory.ValidRole(role) {
		return nil, "", decline(http.StatusBadRequest, "invalid_request", `The role must be "owner", "admin" or "member".`)
	}
	u, from, err := s.findMember(ctx, q, ref)
	if err != nil {
		return nil, "", err
	}
	if why := mayManage(q.role, from, role); why != "" {
		return nil, "", decline(http.StatusForbidden, "access_denied", why)
	}
	if err := memberRefusal(s.people.SetRole(ctx, q.org.ID, u.ID, role), q.org.ID); err != nil {
		return nil, "", err
	}
	s.auditOrLog(ctx, q.org.ID, q.user.ID, "member.role", map[string]any{"user": u.ID, "from": from, "to": role})
	return u, from, nil
}

// dropMember removes the member ref; on oneself it is leaving, which any
// member may do.
func (s *Server) dropMember(ctx context.Context, q *orgRequest, ref string) (*User, error) {
	u, role, err := s.findMember(ctx, q, ref)
	if err != nil {
		return nil, err
	}
	leaving := u.ID == q.user.ID
	if why := mayManage(q.role, role, ""); why != "" && !leaving {
		return nil, decline(http.StatusForbidden, "access_denied", why)
	}
	if err := memberRefusal(s.people.RemoveMember(ctx, q.org.ID, u.ID), q.org.ID); err != nil {
		return nil, err
	}
	if err := s.revokeCertificates(ctx, certificatesOfPerson(u.ID, revokedRemoved)); err != nil {
		return nil, err
	}
	action := "member.remove"
	if leaving {
		action = "member.leave"
	}
	s.auditOrLog(ctx, q.org.ID, q.user.ID, action, map[string]any{"user": u.ID, "role": role})
	return u, nil
}

// memberRefusal turns the directory's refusals into the caller's.
func memberRefusal(err error, org string) error {
	switch {
	case errors.Is(err, directory.ErrLastOwner):
		return decline(http.StatusConflict, "last_owner", org+" must keep an owner: make someone else an owner first.")
	case errors.Is(err, directory.ErrNotMember):
		return decline(http.StatusNotFound, "not_found", "That person is not a member of "+org+" (any more).")
	}
	return err
}

// errNotDelivered: the invitation stands, but its email did not go out.
var errNotDelivered = errors.New("the invitation's email could not be sent")

// inviteMember invites address with role and mails the link. When the
// mail fails, the invitation is returned with errNotDelivered: it can be
// resent.
func (s *Server) inviteMember(ctx context.Context, q *orgRequest, address, role string) (*invitation, error) {
	addr, err := mail.ParseAddress(address)
	if err != nil || addr.Address != strings.TrimSpace(address) || len(addr.Address) > 254 {
		return nil, decline(http.StatusBadRequest, "invalid_request", "The email must be a plain address like bob@example.com.")
	}
	if role == "" {
		role = directory.RoleMember
	}
	if !directory.ValidRole(role) {
		return nil, decline(http.StatusBadRequest, "invalid_request", `The role must be "owner", "admin" or "member".`)
	}
	if why := mayManage(q.role, "", role); why != "" {
		return nil, decline(http.StatusForbidden, "access_denied", why)
	}
	inv, link, err := s.createInvitation(ctx, q, addr.Address, role)
	switch {
	case errors.Is(err, errTooManyInvitations):
		return nil, decline(http.StatusConflict, "too_many_invitations", "The organization has 1000 open invitations; revoke some first.")
	case err != nil:
		return nil, err
	}
	if err := s.sendInvitation(ctx, q, inv, link); err != nil {
		return inv, errNotDelivered
	}
	return inv, nil
}

// openInvitation is the organization's open invitation with this id, for
// an owner or admin who may manage its role.
func (s *Server) openInvitation(ctx context.Context, q *orgRequest, id string) (*invitation, error) {
	if q.role != directory.RoleOwner && q.role != directory.RoleAdmin {
		return nil, decline(http.StatusForbidden, "access_denied", "Only the organization's owners and admins can do this; your role is "+q.role+".")
	}
	inv, err := s.loadInvitation(ctx, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && inv.Org != q.org.ID) {
		return nil, decline(http.StatusNotFound, "not_found", "There is no open invitation with that id; it may have been accepted, revoked or have expired.")
	}
	if err != nil {
		return nil, err
	}
	if why := mayManage(q.role, "", inv.Role); why != "" {
		return nil, decline(http.StatusForbidden, "access_denied", why)
	}
	return inv, nil
}

// reissueInvitation sends a new link (the old one stops working) good for
// a new week; errNotDelivered when the mail failed.
func (s *Server) reissueInvitation(ctx context.Context, q *orgRequest, id string) (*invitation, error) {
	inv, err := s.openInvitation(ctx, q, id)
	if err != nil {
		return nil, err
	}
	old := inv.Digest
	secret := randomString(32)
	inv.Digest, inv.Expires = s.invitationDigest(secret), s.cfg.Now().UTC().Add(invitationTTL)
	if err := s.store.Put(ctx, invitationTokenNS, inv.Digest, []byte(inv.ID), invitationTTL); err != nil {
		return nil, err
	}
	if err := s.putInvitation(ctx, inv); err != nil {
		return nil, err
	}
	_ = s.store.Delete(ctx, invitationTokenNS, old) // else it dies with its invitation's digest check
	s.auditOrLog(ctx, q.org.ID, q.user.ID, "invitation.resend", map[string]any{"id": inv.ID, "email": inv.Email})
	if err := s.sendInvitation(ctx, q, inv, s.cfg.Issuer+"/invite/"+invitationPrefix+secret); err != nil {
		return inv, errNotDelivered
	}
	return inv, nil
}

// withdrawInvitation revokes an open invitation.
func (s *Server) withdrawInvitation(ctx context.Context, q *orgRequest, id string) (*invitation, error) {
	inv, err := s.openInvitation(ctx, q, id)
	if err != nil {
		return nil, err
	}
	if err := s.dropInvitation(ctx, inv); err != nil {
		return nil, err
	}
	s.auditOrLog(ctx, q.org.ID, q.user.ID, "invitation.revoke", map[string]any{"id": inv.ID, "email": inv.Email})
	return inv, nil
}

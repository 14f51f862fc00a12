package authz

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/email"
	"github.com/stepup-dev/stepup/tokens"
)

// An invitation asks someone, by email, to join an organization with a
// role. The email carries a single-use link that expires; opening it lets
// the person create an account (the address is theirs: they read the
// mail) or, signed in with an account of that address, join with it. The
// store keeps only an HMAC of the link's secret.
type invitation struct {
	ID        string    `json:"id"`
	Org       string    `json:"org"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	InvitedBy string    `json:"invited_by"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	Digest    string    `json:"digest"`
}

const (
	invitationNS      = "invitation"
	invitationTokenNS = "invitation-token"
	invitationsOfNS   = "invitations-of"
	invitationPrefix  = "stpi_"
	invitationTTL     = 7 * 24 * time.Hour
	maxInvitations    = 1000
)

// linkDigest is what the store keeps of a secret mailed in a link
// (an invitation, a password reset), keyed for its purpose.
func (s *Server) linkDigest(purpose, secret string) string {
	m := hmac.New(sha256.New, derive(s.cfg.Secret, purpose))
	m.Write([]byte(secret))
	return b64.EncodeToString(m.Sum(nil))
}

func (s *Server) invitationDigest(secret string) string { return s.linkDigest("invitations", secret) }

type invitationView struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	InvitedBy string    `json:"invited_by"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
}

func (i *invitation) view() invitationView {
	return invitationView{ID: i.ID, Email: i.Email, Role: i.Role, InvitedBy: i.InvitedBy, Created: i.Created, Expires: i.Expires}
}

// invite is POST /api/orgs/{org}/invitations {"email", "role"}.
func (s *Server) invite(w http.ResponseWriter, r *http.Request) {
	q, ok := s.orgCaller(w, r, useManage)
	if !ok {
		return
	}
	var body struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"email": "…", "role": "member"} (or "admin", "owner").`)
		return
	}
	inv, err := s.inviteMember(r.Context(), q, body.Email, body.Role)
	switch {
	case errors.Is(err, errNotDelivered):
		writeError(w, http.StatusBadGateway, "delivery_failed",
			"The invitation was made but its email could not be sent; resend it later (POST …/invitations/"+inv.ID+"/resend).")
	case err != nil:
		s.answerAPI(w, err)
	default:
		writeJSON(w, http.StatusCreated, inv.view())
	}
}

var errTooManyInvitations = errors.New("too many invitations")

// createInvitation stores a new invitation and returns the link for it.
func (s *Server) createInvitation(ctx context.Context, q *orgRequest, addr, role string) (*invitation, string, error) {
	now := s.cfg.Now().UTC()
	secret := randomString(32)
	inv := &invitation{ID: randomString(12), Org: q.org.ID, Email: addr, Role: role, InvitedBy: q.user.ID,
		Created: now, Expires: now.Add(invitationTTL), Digest: s.invitationDigest(secret)}
	// Ids whose invitations expired are forgotten; which ones is read
	// first, as an update may not read other keys.
	open, err := s.openInvitations(ctx, q.org.ID)
	if err != nil {
		return nil, "", err
	}
	live := map[string]bool{}
	for _, o := range open {
		live[o.ID] = true
	}
	err = s.store.Update(ctx, invitationsOfNS, q.org.ID, 0, func(old []byte) ([]byte, error) {
		var ids []string
		if old != nil {
			if err := json.Unmarshal(old, &ids); err != nil {
				return nil, err
			}
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return !live[id] })
		if len(ids) >= maxInvitations {
			return nil, errTooManyInvitations
		}
		return json.Marshal(append(ids, inv.ID))
	})
	if err != nil {
		return nil, "", err
	}
	if err := s.putInvitation(ctx, inv); err != nil {
		return nil, "", err
	}
	if err := s.store.Put(ctx, invitationTokenNS, inv.Digest, []byte(inv.ID), invitationTTL); err != nil {
		return nil, "", err
	}
	s.auditOrLog(ctx, q.org.ID, q.user.ID, "invitation.create", map[string]any{"id": inv.ID, "email": addr, "role": role})
	return inv, s.cfg.Issuer + "/invite/" + invitationPrefix + secret, nil
}

func (s *Server) putInvitation(ctx context.Context, inv *invitation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	return s.store.Put(ctx, invitationNS, inv.ID, data, time.Until(inv.Expires)+time.Minute)
}

func (s *Server) loadInvitation(ctx context.Context, id string) (*invitation, error) {
	data, err := s.store.Get(ctx, invitationNS, id)
	if err != nil {
		return nil, err
	}
	var inv invitation
	if err := json.Unmarshal(data, &inv); err != nil {
		return nil, err
	}
	if !s.cfg.Now().Before(inv.Expires) {
		return nil, storage.ErrNotFound
	}
	return &inv, nil
}

func (s *Server) sendInvitation(ctx context.Context, q *orgRequest, inv *invitation, link string) error {
	org, who := email.OneLine(q.org.Name), email.OneLine(q.user.Username)
	body := fmt.Sprintf("Hello,\r\n\r\n%s invites you to join %s on Stepup as %s %s.\r\n\r\n", who, org, article(inv.Role), inv.Role) +
		fmt.Sprintf("To accept, open this link (it works once, until %s):\r\n\r\n  %s\r\n\r\n", inv.Expires.Format("2 January 2006"), link) +
		"If you did not expect this, ignore this email.\r\n"
	msg, err := email.Compose(s.cfg.MailFrom, inv.Email, who+" invites you to join "+org, body, s.cfg.Now())
	if err == nil {
		err = s.cfg.Mailer.Send(ctx, s.cfg.MailFrom, []string{inv.Email}, msg)
	}
	if err != nil {
		s.log.Error("sending an invitation", "org", inv.Org, "invitation", inv.ID, "err", err)
	}
	return err
}

func article(role string) string {
	if role == directory.RoleOwner || role == directory.RoleAdmin {
		return "an"
	}
	return "a"
}

// invitations is GET /api/orgs/{org}/invitations: the open ones.
func (s *Server) invitations(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, ok := s.orgCaller(w, r, useManage)
	if !ok || !q.admin(w) {
		return
	}
	list, err := s.openInvitations(ctx, q.org.ID)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	out := []invitationView{}
	for _, inv := range list {
		out = append(out, inv.view())
	}
	writeJSON(w, http.StatusOK, map[string]any{"invitations": out})
}

func (s *Server) openInvitations(ctx context.Context, org string) ([]*invitation, error) {
	data, err := s.store.Get(ctx, invitationsOfNS, org)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := json.Unmarshal(data, &ids); err != nil {
		return nil, err
	}
	var out []*invitation
	for _, id := range ids {
		inv, err := s.loadInvitation(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, inv)
	}
	return out, nil
}

// resendInvitation is POST …/invitations/{id}/resend: a new link (the old
// one stops working) and a new week.
func (s *Server) resendInvitation(w http.ResponseWriter, r *http.Request) {
	q, ok := s.orgCaller(w, r, useManage)
	if !ok {
		return
	}
	inv, err := s.reissueInvitation(r.Context(), q, r.PathValue("id"))
	switch {
	case errors.Is(err, errNotDelivered):
		writeError(w, http.StatusBadGateway, "delivery_failed", "The email could not be sent; try again later.")
	case err != nil:
		s.answerAPI(w, err)
	default:
		writeJSON(w, http.StatusOK, inv.view())
	}
}

// revokeInvitation is DELETE …/invitations/{id}.
func (s *Server) revokeInvitation(w http.ResponseWriter, r *http.Request) {
	q, ok := s.orgCaller(w, r, useManage)
	if !ok {
		return
	}
	if _, err := s.withdrawInvitation(r.Context(), q, r.PathValue("id")); err != nil {
		s.answerAPI(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) dropInvitation(ctx context.Context, inv *invitation) error {
	if err := s.store.Delete(ctx, invitationTokenNS, inv.Digest); err != nil {
		return err
	}
	if err := s.store.Delete(ctx, invitationNS, inv.ID); err != nil {
		return err
	}
	return s.store.Update(ctx, invitationsOfNS, inv.Org, 0, func(old []byte) ([]byte, error) {
		var ids []string
		if old != nil {
			if err := json.Unmarshal(old, &ids); err != nil {
				return nil, err
			}
		}
		return json.Marshal(slices.DeleteFunc(ids, func(id string) bool { return id == inv.ID }))
	})
}

// The page the link opens.

type invitePage struct {
	Title, Error, CSRF, Token string
	OrgName, Role, Article    string
	Email, InvitedBy          string
	// SignedInAs is the person this browser is signed in as, if any; Join
	// says they may join with that account (it has the invited address).
	SignedInAs string
	Join       bool
	Username   string
}

var usernameRule = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,38}$`)

const minPasswordLen = 10

// linkInvitation reads the link's invitation without using it up.
func (s *Server) linkInvitation(ctx context.Context, token string) (*invitation, error) {
	secret, ok := strings.CutPrefix(token, invitationPrefix)
	if !ok || len(secret) != 43 {
		return nil, storage.ErrNotFound
	}
	digest := s.invitationDigest(secret)
	id, err := s.store.Get(ctx, invitationTokenNS, digest)
	if err != nil {
		return nil, err
	}
	inv, err := s.loadInvitation(ctx, string(id))
	if err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(inv.Digest), []byte(digest)) {
		return nil, storage.ErrNotFound // a link replaced by a resend
	}
	return inv, nil
}

// invitePageFor fills the page, or answers why there is none.
func (s *Server) invitePageFor(w http.ResponseWriter, r *http.Request) (*invitation, *invitePage, *LoginSession, string, bool) {
	ctx := r.Context()
	token := r.PathValue("token")
	inv, err := s.linkInvitation(ctx, token)
	if errors.Is(err, storage.ErrNotFound) {
		s.showError(w, http.StatusNotFound, "Invitation not found",
			"This invitation link was already used, was revoked, was replaced by a newer email, or has expired. Ask the person who invited you to send a new one.")
		return nil, nil, nil, "", false
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, nil, nil, "", false
	}
	o, err := s.people.Org(ctx, inv.Org)
	if err != nil {
		s.showError(w, http.StatusNotFound, "Invitation not found", "The organization of this invitation no longer exists.")
		return nil, nil, nil, "", false
	}
	page := &invitePage{Title: "Join " + o.Name, CSRF: s.csrfToken(w, r), Token: token, OrgName: o.Name, Role: inv.Role,
		Article: article(inv.Role), Email: inv.Email}
	if by, _ := s.user(ctx, inv.InvitedBy); by != nil {
		page.InvitedBy = by.Username
	}
	ls, sid, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, nil, nil, "", false
	}
	if ls != nil && !ls.PrimaryAt().IsZero() {
		if u, err := s.sessionUser(ctx, ls); err == nil && u != nil {
			page.SignedInAs = u.Username
			page.Join = strings.EqualFold(u.Email, inv.Email)
		}
	}
	return inv, page, ls, sid, true
}

// inviteSignIn is GET /invite/{token}/sign-in: sign in (through the
// second factor if the account has one), then back to the invitation.
func (s *Server) inviteSignIn(w http.ResponseWriter, r *http.Request) {
	back := "/invite/" + r.PathValue("token")
	if _, _, _, ok := s.account(w, r, back); ok {
		http.Redirect(w, r, back, http.StatusSeeOther)
	}
}

// invitePage is GET /invite/{token}.
func (s *Server) invitePage(w http.ResponseWriter, r *http.Request) {
	if _, page, _, _, ok := s.invitePageFor(w, r); ok {
		s.render(w, s.pages.invite, http.StatusOK, page)
	}
}

// acceptInvite is POST /invite/{token}: join with the signed-in account,
// or create one with a username and password.
func (s *Server) acceptInvite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot accept the invitation") {
		return
	}
	inv, page, ls, sid, ok := s.invitePageFor(w, r)
	if !ok {
		return
	}
	var userID string
	if r.PostFormValue("action") == "join" {
		if !page.Join {
			page.Error = "Sign in with the account of " + inv.Email + " to join with it, or create a new account below."
			s.render(w, s.pages.invite, http.StatusForbidden, page)
			return
		}
		userID = ls.UserID
	} else {
		username, password := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
		page.Username = username
		switch {
		case !usernameRule.MatchString(username):
			page.Error = "Choose a username of 2 to 39 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit."
		case len(password) < minPasswordLen || len(password) > maxCredentialLen:
			page.Error = fmt.Sprintf("Choose a password of at least %d characters.", minPasswordLen)
		case password != r.PostFormValue("password_again"):
			page.Error = "The two passwords differ; type the same password twice."
		}
		if page.Error != "" {
			s.render(w, s.pages.invite, http.StatusBadRequest, page)
			return
		}
		hash, err := HashPassword(password)
		if err != nil {
			s.internalError(w, err)
			return
		}
		u := User{ID: "u_" + randomString(12), Username: username, Email: inv.Email, EmailVerified: true, PasswordHash: hash}
		switch err := s.people.CreateUser(ctx, u); {
		case errors.Is(err, directory.ErrUsernameTaken):
			page.Error = "The username " + username + " is taken; choose another."
		case errors.Is(err, directory.ErrEmailTaken):
			page.Error = "There is already an account for " + inv.Email + ": sign in with it, then open this link again to join."
		case err != nil:
			s.authorizeError(w, nil, err)
			return
		}
		if page.Error != "" {
			s.render(w, s.pages.invite, http.StatusConflict, page)
			return
		}
		userID = u.ID
		// Signed in with the password just set, in this browser.
		ls = &LoginSession{UserID: u.ID, CreatedAt: s.cfg.Now()}
		ls.addFactor(tokens.MethodPassword, "", s.cfg.Now())
		if err := s.sessions.save(ctx, w, ls, sid); err != nil {
			s.authorizeError(w, nil, err)
			return
		}
	}
	// Used up before the membership is made: of two acceptances at once,
	// one takes the link.
	if _, err := s.store.Take(ctx, invitationTokenNS, inv.Digest); errors.Is(err, storage.ErrNotFound) {
		s.showError(w, http.StatusNotFound, "Invitation not found", "This invitation link was just used.")
		return
	} else if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	err := s.people.AddMember(ctx, inv.Org, userID, inv.Role)
	if err != nil && !errors.Is(err, directory.ErrMember) {
		// Give the link back, so that trying again can work.
		_ = s.store.Create(ctx, invitationTokenNS, inv.Digest, []byte(inv.ID), time.Until(inv.Expires))
		s.authorizeError(w, nil, err)
		return
	}
	if err := s.dropInvitation(ctx, inv); err != nil {
		s.log.Error("dropping an accepted invitation", "invitation", inv.ID, "err", err)
	}
	s.auditOrLog(ctx, inv.Org, userID, "invitation.accept", map[string]any{"id": inv.ID, "email": inv.Email, "role": inv.Role})
	msg := "You are now " + article(inv.Role) + " " + inv.Role + " of " + page.OrgName + "."
	if errors.Is(err, directory.ErrMember) {
		msg = "You were already a member of " + page.OrgName + "."
	}
	s.showMessage(w, http.StatusOK, messagePage{Title: "Welcome to " + page.OrgName,
		Message: msg + " You can sign in to the Stepup CLI or console with your username and password; to protect your account, set up multi-factor authentication at " + s.cfg.Issuer + "/account/security."})
}

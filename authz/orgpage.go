package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/mfa"
)

// An organization's settings pages: General (any member: what the
// organization requires, leaving it), Members (owners and admins: roles,
// removal, invitations) and Security (owners and admins: MFA required,
// SSO required, and each member's MFA with reminders).

// orgFrame is what every settings page of an organization has.
type orgFrame struct {
	frame
	Title, Error, Notice, CSRF string
	ErrorLink, ErrorLinkText   string
	OrgID, OrgName, Role       string
	Manage                     bool
}

// orgGate admits a browser to an organization's pages: signed in with
// every factor the person has, a member (404 otherwise, as for no such
// organization), meeting the organization's policy (stepping up first
// where it can) and, with manage, an owner or admin (403). back is the
// page to return to after signing in.
func (s *Server) orgGate(w http.ResponseWriter, r *http.Request, back string, manage bool) (*orgRequest, []myOrg, bool) {
	ctx := r.Context()
	back = "/orgs/" + r.PathValue("org") + back
	ls, _, u, orgs, ok := s.consoleUser(w, r, back)
	if !ok {
		return nil, nil, false
	}
	o, role, err := s.orgOf(ctx, r.PathValue("org"), u.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, nil, false
	}
	if o == nil {
		s.showError(w, http.StatusNotFound, "Not found", "There is no organization with that id that you can see.")
		return nil, nil, false
	}
	sec := securityOf(o)
	req := sec.requirements()
	st, err := s.stepFor(ctx, step.Request{AMR: req.AMR, At: s.cfg.Now()}, ls, u)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, nil, false
	}
	if _, known := s.sso.byID[st.Provider]; st.Kind == step.SSO && !known {
		s.showError(w, http.StatusForbidden, "More authentication is required",
			o.Name+" requires single sign-on through "+st.Provider+", which this server has no provider for. Ask its owners.")
		return nil, nil, false
	}
	if st.Kind != step.Done {
		id, err := s.savePending(ctx, pendingAuthorization{Return: back, RequestedAt: s.cfg.Now(), Org: o.ID})
		if err != nil {
			s.authorizeError(w, nil, err)
			return nil, nil, false
		}
		http.Redirect(w, r, pageFor(st)+"?challenge="+id, http.StatusSeeOther)
		return nil, nil, false
	}
	q := &orgRequest{user: u, org: o, role: role, sec: sec}
	if manage && !q.manages() {
		s.showError(w, http.StatusForbidden, "Not allowed", "Only the organization's owners and admins can see this page; your role is "+role+".")
		return nil, nil, false
	}
	return q, orgs, true
}

func (q *orgRequest) manages() bool {
	return q.role == directory.RoleOwner || q.role == directory.RoleAdmin
}

// fill sets the frame of an organization's page; tab is the current one.
func (s *Server) fill(w http.ResponseWriter, r *http.Request, q *orgRequest, orgs []myOrg, tabName string, f *orgFrame) {
	f.Nav = s.navFor(w, r, q.user, "org", orgs)
	f.Nav.Crumbs = []link{{Label: "Organizations", Href: "/"}, {Label: q.org.Name}}
	base := "/orgs/" + q.org.ID + "/settings"
	f.Nav.Tabs = []tab{{Label: "General", Href: base, Current: tabName == "general"}}
	if q.manages() {
		f.Nav.Tabs = append(f.Nav.Tabs,
			tab{Label: "Members", Href: base + "/members", Current: tabName == "members"},
			tab{Label: "Security", Href: base + "/security", Current: tabName == "security"})
	}
	f.Title, f.CSRF = q.org.Name+" settings", f.Nav.CSRF
	f.OrgID, f.OrgName, f.Role, f.Manage = q.org.ID, q.org.Name, q.role, q.manages()
}

// pageError puts a refusal on the page, or answers any other error itself.
func (s *Server) pageError(w http.ResponseWriter, err error, f *orgFrame) (int, bool) {
	var d *declined
	if errors.As(err, &d) {
		f.Error = d.message
		return d.status, true
	}
	s.authorizeError(w, nil, err)
	return 0, false
}

func (s *Server) orgRedirect(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/orgs/"+r.PathValue("org")+"/settings", http.StatusSeeOther)
}

// The General tab.

type orgGeneralPage struct {
	orgFrame
	MFARequired bool
	SSOName     string
	Members     int64
	CanLeave    bool
}

func (s *Server) orgGeneralPage(w http.ResponseWriter, r *http.Request) {
	q, orgs, ok := s.orgGate(w, r, "/settings", false)
	if !ok {
		return
	}
	var page orgGeneralPage
	if r.URL.Query().Get("created") != "" {
		page.Notice = q.org.Name + " is ready, and you are its owner. Invite people from Members."
	}
	s.renderOrgGeneral(w, r, q, orgs, http.StatusOK, page)
}

func (s *Server) renderOrgGeneral(w http.ResponseWriter, r *http.Request, q *orgRequest, orgs []myOrg, status int, page orgGeneralPage) {
	n, err := s.people.MemberCount(r.Context(), q.org.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	s.fill(w, r, q, orgs, "general", &page.orgFrame)
	page.MFARequired, page.SSOName, page.Members = q.sec.MFARequired, s.sso.displayName(q.sec.SSOProvider), n
	s.render(w, s.pages.orgGeneral, status, page)
}

func (s *Server) orgLeavePost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot leave the organization") {
		return
	}
	q, orgs, ok := s.orgGate(w, r, "/settings", false)
	if !ok {
		return
	}
	if _, err := s.dropMember(r.Context(), q, q.user.ID); err != nil {
		var page orgGeneralPage
		if status, ok := s.pageError(w, err, &page.orgFrame); ok {
			s.renderOrgGeneral(w, r, q, orgs, status, page)
		}
		return
	}
	s.showMessage(w, http.StatusOK, messagePage{Title: "You left " + q.org.Name,
		Message: "You are no longer a member of " + q.org.Name + ". An owner or admin can invite you again."})
}

// The Members tab.

type orgMembersPage struct {
	orgFrame
	Members     []memberRow
	Invitations []invitationRow
	Roles       []string // what the caller may invite or assign
	Email       string
}

type memberRow struct {
	ID, Username, Name, Email, Role string
	Self                            bool
	// Roles the caller may give this member; none, no role form.
	Roles     []string
	Removable bool
}

type invitationRow struct {
	ID, Email, Role, InvitedBy string
	Expires                    when
	Manageable                 bool
}

var roleOrder = []string{directory.RoleMember, directory.RoleAdmin, directory.RoleOwner}

func (s *Server) orgMembersPage(w http.ResponseWriter, r *http.Request) {
	q, orgs, ok := s.orgGate(w, r, "/settings/members", true)
	if !ok {
		return
	}
	s.renderOrgMembers(w, r, q, orgs, http.StatusOK, orgMembersPage{})
}

func (s *Server) renderOrgMembers(w http.ResponseWriter, r *http.Request, q *orgRequest, orgs []myOrg, status int, page orgMembersPage) {
	ctx := r.Context()
	members, err := s.allMembers(ctx, q.org.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	for _, role := range roleOrder {
		if mayManage(q.role, "", role) == "" {
			page.Roles = append(page.Roles, role)
		}
	}
	for _, m := range members {
		row := memberRow{ID: m.User.ID, Username: m.User.Username, Name: m.User.Name, Email: m.User.Email, Role: m.Role,
			Self: m.User.ID == q.user.ID}
		if !row.Self && mayManage(q.role, m.Role, "") == "" {
			row.Removable = true
			for _, role := range roleOrder {
				if mayManage(q.role, m.Role, role) == "" {
					row.Roles = append(row.Roles, role)
				}
			}
		}
		page.Members = append(page.Members, row)
	}
	invs, err := s.openInvitations(ctx, q.org.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	inviters := make([]string, len(invs))
	for i, inv := range invs {
		inviters[i] = inv.InvitedBy
	}
	names := s.usernames(ctx, inviters)
	for _, inv := range invs {
		page.Invitations = append(page.Invitations, invitationRow{ID: inv.ID, Email: inv.Email, Role: inv.Role,
			InvitedBy: names[inv.InvitedBy], Expires: whenOf(inv.Expires), Manageable: mayManage(q.role, "", inv.Role) == ""})
	}
	s.fill(w, r, q, orgs, "members", &page.orgFrame)
	s.render(w, s.pages.orgMembers, status, page)
}

// usernames maps ids to usernames, in one read; an id it cannot name
// stands for itself.
func (s *Server) usernames(ctx context.Context, ids []string) map[string]string {
	names := map[string]string{}
	for _, id := range ids {
		names[id] = id
	}
	if users, err := s.people.Users(ctx, ids...); err == nil {
		for _, u := range users {
			if u != nil {
				names[u.ID] = u.Username
			}
		}
	}
	return names
}

// orgMemberPost runs one of the Members tab's forms.
func (s *Server) orgMemberPost(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if !s.postedForm(w, r, "Cannot change the members") {
			return
		}
		q, orgs, ok := s.orgGate(w, r, "/settings/members", true)
		if !ok {
			return
		}
		var page orgMembersPage
		var err error
		who := r.PostFormValue("user")
		switch action {
		case "role":
			role := r.PostFormValue("role")
			var u *User
			var from string
			if u, from, err = s.changeRole(ctx, q, who, role); err == nil {
				page.Notice = u.Username + " is now " + article(role) + " " + role + " (was " + from + ")."
			}
		case "remove":
			var u *User
			if u, err = s.dropMember(ctx, q, who); err == nil {
				page.Notice = u.Username + " is no longer a member of " + q.org.Name + "."
			}
		case "invite":
			page.Email = strings.TrimSpace(r.PostFormValue("email"))
			var inv *invitation
			inv, err = s.inviteMember(ctx, q, page.Email, r.PostFormValue("role"))
			if err == nil {
				page.Notice, page.Email = s.sentWords("An invitation", inv.Email), ""
			}
		case "resend":
			var inv *invitation
			if inv, err = s.reissueInvitation(ctx, q, r.PostFormValue("id")); err == nil {
				page.Notice = s.sentWords("A new invitation link", inv.Email) + " The earlier link no longer works."
			}
		case "revoke":
			var inv *invitation
			if inv, err = s.withdrawInvitation(ctx, q, r.PostFormValue("id")); err == nil {
				page.Notice = "The invitation of " + inv.Email + " is revoked; its link no longer works."
			}
		}
		status := http.StatusOK
		if errors.Is(err, errNotDelivered) {
			status, page.Error = http.StatusBadGateway, "The invitation stands, but its email could not be sent. Try Resend in a moment."
		} else if err != nil {
			if status, ok = s.pageError(w, err, &page.orgFrame); !ok {
				return
			}
		}
		s.renderOrgMembers(w, r, q, orgs, status, page)
	}
}

// sentWords says that mail went out, or where it went instead when the
// server has no mail relay.
func (s *Server) sentWords(what, to string) string {
	if _, logOnly := s.cfg.Mailer.(mfa.LogMailer); logOnly {
		return what + " for " + to + " was written to the server's log: this server has no mail relay (smtp) configured, so no email was sent."
	}
	return what + " was emailed to " + to + "."
}

// The Security tab.

type orgSecurityPage struct {
	orgFrame
	MFARequired, PhishingResistant bool
	// OwnMFA, OwnPasskey: what the caller has, without which they may not
	// require it.
	OwnMFA, OwnPasskey bool
	// PasskeysOn: this server can use passkeys.
	PasskeysOn  bool
	SSOProvider string
	Providers   []providerOption
	Members     []securityRow
	Remindable  int
}

type providerOption struct{ ID, Name string }

type securityRow struct {
	ID, Username, Email, Role string
	MFAEnabled                bool
	LastReminded              *when
	// CanRemind: not oneself, no MFA yet, and not reminded recently.
	CanRemind bool
	Self      bool
}

func (s *Server) renderOrgSecurity(w http.ResponseWriter, r *http.Request, q *orgRequest, orgs []myOrg, status int, page orgSecurityPage) {
	ctx := r.Context()
	members, err := s.memberList(ctx, q)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if page.OwnMFA, err = s.hasSecondFactor(ctx, q.user.ID); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if page.OwnPasskey, err = s.passkeys.has(ctx, q.user.ID); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	page.PasskeysOn = s.passkeys.on()
	now := s.cfg.Now()
	for _, m := range members {
		row := securityRow{ID: m.ID, Username: m.Username, Email: m.Email, Role: m.Role, MFAEnabled: m.MFAEnabled, Self: m.ID == q.user.ID}
		recent := false
		if at, err := time.Parse(time.RFC3339, deref(m.LastRemindedAt)); err == nil {
			wn := whenOf(at)
			row.LastReminded, recent = &wn, now.Sub(at) < s.cfg.ReminderInterval
		}
		row.CanRemind = !row.MFAEnabled && !row.Self && !recent && m.Email != ""
		if row.CanRemind {
			page.Remindable++
		}
		page.Members = append(page.Members, row)
	}
	for _, id := range s.sso.ids() {
		page.Providers = append(page.Providers, providerOption{ID: id, Name: s.sso.displayName(id)})
	}
	s.fill(w, r, q, orgs, "security", &page.orgFrame)
	page.MFARequired, page.PhishingResistant, page.SSOProvider = q.sec.MFARequired, q.sec.PhishingResistant, q.sec.SSOProvider
	s.render(w, s.pages.orgSecurity, status, page)
}

func (s *Server) orgSettings(w http.ResponseWriter, r *http.Request) {
	if q, orgs, ok := s.orgGate(w, r, "/settings/security", true); ok {
		s.renderOrgSecurity(w, r, q, orgs, http.StatusOK, orgSecurityPage{})
	}
}

// orgSettingsPost saves one of the Security tab's forms: the MFA switch
// (mfa_required on or off) or the SSO choice (sso_provider).
func (s *Server) orgSettingsPost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot change security settings") {
		return
	}
	q, orgs, ok := s.orgGate(w, r, "/settings/security", true)
	if !ok {
		return
	}
	var c securityChange
	switchOf := func(name string) *bool {
		v, ok := r.PostForm[name]
		if !ok {
			return nil
		}
		on := len(v) > 0 && v[0] == "on"
		return &on
	}
	c.MFARequired, c.PhishingResistant = switchOf("mfa_required"), switchOf("phishing_resistant")
	if v, ok := r.PostForm["sso_provider"]; ok && len(v) > 0 {
		c.SSOProvider = &v[0]
	}
	mfaRequired := c.MFARequired
	var page orgSecurityPage
	status := http.StatusOK
	switch err := s.updateSecurity(r.Context(), q, c); {
	case c.empty():
		status, page.Error = http.StatusBadRequest, "Nothing to change: use an Enable switch or the SSO choice."
	case errors.Is(err, errNeedOwnMFA):
		status, page.Error = http.StatusConflict, errNeedOwnMFA.Error()+"; then you can require it for "+q.org.Name+"."
		page.ErrorLink, page.ErrorLinkText = "/account/security", "Set up multi-factor authentication"
	case errors.Is(err, errNeedOwnPasskey):
		status, page.Error = http.StatusConflict, errNeedOwnPasskey.Error()+"; then you can require phishing-resistant MFA for "+q.org.Name+"."
		page.ErrorLink, page.ErrorLinkText = "/account/security", "Add a passkey"
	case errors.Is(err, errUnknownProvider):
		status, page.Error = http.StatusBadRequest, "There is no such SSO provider."
	case err != nil:
		s.authorizeError(w, nil, err)
		return
	case mfaRequired != nil && *mfaRequired:
		page.Notice = "MFA is now required: every member of " + q.org.Name + " needs multi-factor authentication to continue."
	case mfaRequired != nil:
		page.Notice = "MFA is no longer required for " + q.org.Name + "."
	case c.PhishingResistant != nil && *c.PhishingResistant:
		page.Notice = "Phishing-resistant MFA is now required: every member of " + q.org.Name + " needs a passkey or security key to continue."
	case c.PhishingResistant != nil:
		page.Notice = "Phishing-resistant MFA is no longer required for " + q.org.Name + "."
	default:
		page.Notice = "Saved."
	}
	s.renderOrgSecurity(w, r, q, orgs, status, page)
}

// orgRemindPost sends reminders: the one member whose Remind button was
// pressed, or the selected members.
func (s *Server) orgRemindPost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot send reminders") {
		return
	}
	q, orgs, ok := s.orgGate(w, r, "/settings/security", true)
	if !ok {
		return
	}
	ids := r.PostForm["user_id"]
	if one := r.PostFormValue("only"); one != "" {
		ids = []string{one}
	}
	var page orgSecurityPage
	status := http.StatusOK
	if len(ids) == 0 || len(ids) > maxReminderBatch {
		status, page.Error = http.StatusBadRequest, "Select the members to remind."
		s.renderOrgSecurity(w, r, q, orgs, status, page)
		return
	}
	sent, skips, err := s.remindMembers(r.Context(), q, ids, false)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	page.Notice = s.reminderSummary(r.Context(), q, sent, skips)
	s.renderOrgSecurity(w, r, q, orgs, status, page)
}

var skipWords = map[string]string{
	"mfa_enabled":       "already has MFA",
	"reminded_recently": "was reminded recently",
	"not_a_member":      "is not a member",
	"no_email":          "has no email address",
	"delivery_failed":   "could not be emailed; try again later",
	"self":              "is you",
}

func (s *Server) reminderSummary(ctx context.Context, q *orgRequest, sent []string, skips []skipped) string {
	ids := slices.Clone(sent)
	for _, sk := range skips {
		ids = append(ids, sk.ID)
	}
	names := s.usernames(ctx, ids)
	var parts []string
	if len(sent) > 0 {
		var who []string
		for _, id := range sent {
			who = append(who, names[id])
		}
		if _, logOnly := s.cfg.Mailer.(mfa.LogMailer); logOnly {
			parts = append(parts, "Reminder for "+strings.Join(who, ", ")+" written to the server's log: this server has no mail relay (smtp) configured, so no email was sent.")
		} else {
			parts = append(parts, "Reminder sent to "+strings.Join(who, ", ")+".")
		}
	}
	for _, sk := range skips {
		parts = append(parts, fmt.Sprintf("Not sent to %s: %s.", names[sk.ID], skipWords[sk.Reason]))
	}
	return strings.Join(parts, " ")
}

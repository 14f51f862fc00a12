package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/stepup-dev/stepup/tokens"
)

// orgSettingsPage is /orgs/{org}/settings/security.
type orgSettingsPage struct {
	Title, Error, Notice, CSRF string
	ErrorLink                  string
	OrgID, OrgName             string
	MFARequired                bool
	SSOProvider                string
	Providers                  []string
	Members                    []memberView
}

// orgPage admits a browser to an organization's settings: signed in with
// every factor the person has, a member (404 otherwise, as for no such
// organization), meeting the organization's policy (stepping up first
// where it can), and an owner or admin (403).
func (s *Server) orgPage(w http.ResponseWriter, r *http.Request) (*orgRequest, bool) {
	ctx := r.Context()
	path := "/orgs/" + r.PathValue("org") + "/settings/security"
	ls, _, u, ok := s.account(w, r, path)
	if !ok {
		return nil, false
	}
	o, role, err := s.orgOf(ctx, r.PathValue("org"), u.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, false
	}
	if o == nil {
		s.showError(w, http.StatusNotFound, "Not found", "There is no organization with that id that you can see.")
		return nil, false
	}
	sec := securityOf(o)
	missing := tokens.Missing(sec.requirements(), ls.AMR(), ls.AuthTime(), s.cfg.Now())
	if slices.Contains(missing.AMR, tokens.MethodMFA) {
		// Signed in with every factor they have, so they have none yet.
		id, err := s.savePending(ctx, pendingAuthorization{Return: path, RequestedAt: s.cfg.Now()})
		if err != nil {
			s.authorizeError(w, nil, err)
			return nil, false
		}
		http.Redirect(w, r, pageEnroll+"?challenge="+id, http.StatusSeeOther)
		return nil, false
	}
	if !missing.Satisfied() {
		s.showError(w, http.StatusForbidden, "More authentication is required",
			o.Name+" requires: "+missing.Describe("; ")+". Signing in that way is not available here yet.")
		return nil, false
	}
	q := &orgRequest{user: u, org: o, role: role, sec: sec}
	if q.role != "owner" && q.role != "admin" {
		s.showError(w, http.StatusForbidden, "Not allowed", "Only the organization's owners and admins can see its security settings; your role is "+role+".")
		return nil, false
	}
	return q, true
}

func (s *Server) renderOrgPage(w http.ResponseWriter, r *http.Request, q *orgRequest, status int, page orgSettingsPage) {
	members, err := s.memberList(r.Context(), q)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	page.Title, page.CSRF = q.org.Name+": security", s.csrfToken(w, r)
	page.OrgID, page.OrgName = q.org.ID, q.org.Name
	page.MFARequired, page.SSOProvider, page.Providers = q.sec.MFARequired, q.sec.SSOProvider, s.sso.ids()
	page.Members = members
	s.render(w, s.pages.orgSecurity, status, page)
}

func (s *Server) orgSettings(w http.ResponseWriter, r *http.Request) {
	if q, ok := s.orgPage(w, r); ok {
		s.renderOrgPage(w, r, q, http.StatusOK, orgSettingsPage{})
	}
}

// orgSettingsPost saves the security settings form.
func (s *Server) orgSettingsPost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot change security settings") {
		return
	}
	q, ok := s.orgPage(w, r)
	if !ok {
		return
	}
	mfaRequired := r.PostFormValue("mfa_required") == "on"
	provider := r.PostFormValue("sso_provider")
	var page orgSettingsPage
	status := http.StatusOK
	switch err := s.updateSecurity(r.Context(), q, &mfaRequired, &provider); {
	case errors.Is(err, errNeedOwnMFA):
		status, page.Error, page.ErrorLink = http.StatusConflict, errNeedOwnMFA.Error()+"; then you can require it for "+q.org.Name+".", "/account/security"
	case errors.Is(err, errUnknownProvider):
		status, page.Error = http.StatusBadRequest, "There is no such SSO provider."
	case err != nil:
		s.authorizeError(w, nil, err)
		return
	default:
		page.Notice = "Saved."
	}
	s.renderOrgPage(w, r, q, status, page)
}

// orgRemindPost sends reminders: the one member whose Remind button was
// pressed, or the selected members.
func (s *Server) orgRemindPost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot send reminders") {
		return
	}
	q, ok := s.orgPage(w, r)
	if !ok {
		return
	}
	ids := r.PostForm["user_id"]
	if one := r.PostFormValue("only"); one != "" {
		ids = []string{one}
	}
	var page orgSettingsPage
	status := http.StatusOK
	if len(ids) == 0 || len(ids) > maxReminderBatch {
		status, page.Error = http.StatusBadRequest, "Select the members to remind."
		s.renderOrgPage(w, r, q, status, page)
		return
	}
	sent, skips, err := s.remindMembers(r.Context(), q, ids, false)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	page.Notice = s.reminderSummary(r.Context(), sent, skips)
	s.renderOrgPage(w, r, q, status, page)
}

var skipWords = map[string]string{
	"mfa_enabled":       "already has MFA",
	"reminded_recently": "was reminded recently",
	"not_a_member":      "is not a member",
	"no_email":          "has no email address",
	"delivery_failed":   "could not be emailed; try again later",
}

func (s *Server) reminderSummary(ctx context.Context, sent []string, skips []skipped) string {
	ids := append(slices.Clone(sent), make([]string, 0, len(skips))...)
	for _, sk := range skips {
		ids = append(ids, sk.ID)
	}
	names := map[string]string{}
	if users, err := s.people.Users(ctx, ids...); err == nil { // else ids will do
		for _, u := range users {
			if u != nil {
				names[u.ID] = u.Username
			}
		}
	}
	name := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}
	var parts []string
	if len(sent) > 0 {
		var names []string
		for _, id := range sent {
			names = append(names, name(id))
		}
		parts = append(parts, "Reminder sent to "+strings.Join(names, ", ")+".")
	}
	for _, sk := range skips {
		parts = append(parts, fmt.Sprintf("Not sent to %s: %s.", name(sk.ID), skipWords[sk.Reason]))
	}
	return strings.Join(parts, " ")
}

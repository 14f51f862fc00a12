package authz

import (
	"context"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/stepup-dev/stepup/authz/directory"
)

// The console: the home page with the person's organizations, their
// profile, and the frame (user menu, breadcrumbs, tabs) around every page
// a signed-in person browses.

// routeConsole mounts the console's pages.
func (s *Server) routeConsole(r Router, page func(http.HandlerFunc) http.Handler) {
	r.Method(http.MethodGet, "/", page(s.home))
	r.Method(http.MethodPost, "/orgs", page(s.createOrgPost))
	r.Method(http.MethodGet, "/account", page(s.profilePage))
	r.Method(http.MethodGet, "/orgs/{org}", page(s.orgRedirect))
	r.Method(http.MethodGet, "/orgs/{org}/settings", page(s.orgGeneralPage))
	r.Method(http.MethodPost, "/orgs/{org}/settings/leave", page(s.orgLeavePost))
	r.Method(http.MethodGet, "/orgs/{org}/settings/members", page(s.orgMembersPage))
	r.Method(http.MethodPost, "/orgs/{org}/settings/members/role", page(s.orgMemberPost("role")))
	r.Method(http.MethodPost, "/orgs/{org}/settings/members/remove", page(s.orgMemberPost("remove")))
	r.Method(http.MethodPost, "/orgs/{org}/settings/invitations", page(s.orgMemberPost("invite")))
	r.Method(http.MethodPost, "/orgs/{org}/settings/invitations/resend", page(s.orgMemberPost("resend")))
	r.Method(http.MethodPost, "/orgs/{org}/settings/invitations/revoke", page(s.orgMemberPost("revoke")))
}

// myOrg is one of the signed-in person's organizations.
type myOrg struct {
	org  *directory.Org
	role string
}

func (s *Server) myOrgs(ctx context.Context, u *User) ([]myOrg, error) {
	ms, err := s.people.OrgsOf(ctx, u.ID)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.OrgID
	}
	orgs, err := s.people.Orgs(ctx, ids...)
	if err != nil {
		return nil, err
	}
	var out []myOrg
	for i, o := range orgs {
		if o != nil {
			out = append(out, myOrg{org: o, role: ms[i].Role})
		}
	}
	return out, nil
}

// navFor is the frame of a console page for u.
func (s *Server) navFor(w http.ResponseWriter, r *http.Request, u *User, section string, orgs []myOrg) *navBar {
	n := &navBar{Username: u.Username, CSRF: s.csrfToken(w, r), Section: section}
	if c, _ := utf8.DecodeRuneInString(u.Username); c != utf8.RuneError {
		n.Initial = string(unicode.ToUpper(c))
	}
	for _, o := range orgs {
		n.Orgs = append(n.Orgs, navOrg{ID: o.org.ID, Name: o.org.Name})
	}
	return n
}

// consoleUser is the signed-in person of a console page and their
// organizations, or false once the browser has been sent to sign in.
func (s *Server) consoleUser(w http.ResponseWriter, r *http.Request, path string) (*LoginSession, string, *User, []myOrg, bool) {
	ls, sid, u, ok := s.account(w, r, path)
	if !ok {
		return nil, "", nil, nil, false
	}
	orgs, err := s.myOrgs(r.Context(), u)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, "", nil, nil, false
	}
	return ls, sid, u, orgs, true
}

type homePage struct {
	frame
	Title, Error, Notice, CSRF string
	Orgs                       []homeOrg
	HasMFA                     bool
	NewName, NewID             string
}

type homeOrg struct {
	ID, Name, Role string
	MFARequired    bool
	SSOName        string
	Manage         bool
}

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		s.showError(w, http.StatusNotFound, "Not found", "There is no page at this address. Start again from the home page.")
		return
	}
	_, _, u, orgs, ok := s.consoleUser(w, r, "/")
	if !ok {
		return
	}
	s.renderHome(w, r, u, orgs, http.StatusOK, homePage{})
}

func (s *Server) renderHome(w http.ResponseWriter, r *http.Request, u *User, orgs []myOrg, status int, page homePage) {
	enrolled, err := s.mfa.enabled(r.Context(), u.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	page.Nav = s.navFor(w, r, u, "home", orgs)
	page.Title, page.CSRF, page.HasMFA = "Organizations", page.Nav.CSRF, enrolled
	for _, o := range orgs {
		page.Orgs = append(page.Orgs, homeOrg{ID: o.org.ID, Name: o.org.Name, Role: o.role,
			MFARequired: o.org.MFARequired, SSOName: s.sso.displayName(o.org.SSOProvider),
			Manage: o.role == directory.RoleOwner || o.role == directory.RoleAdmin})
	}
	s.render(w, s.pages.home, status, page)
}

// createOrgPost is the home page's "Create organization" form.
func (s *Server) createOrgPost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot create the organization") {
		return
	}
	_, _, u, orgs, ok := s.consoleUser(w, r, "/")
	if !ok {
		return
	}
	name, id := strings.TrimSpace(r.PostFormValue("name")), strings.TrimSpace(r.PostFormValue("id"))
	if id == "" {
		id = slug(name)
	}
	o, err := s.newOrg(r.Context(), u, id, name)
	if err != nil {
		if d, ok := err.(*declined); ok {
			s.renderHome(w, r, u, orgs, d.status, homePage{Error: d.message, NewName: name, NewID: id})
			return
		}
		s.authorizeError(w, nil, err)
		return
	}
	http.Redirect(w, r, "/orgs/"+o.ID+"/settings?created=1", http.StatusSeeOther)
}

// slug proposes an organization id from its name: "ACME Corp." → "acme-corp".
func slug(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

type profilePage struct {
	frame
	Title, Username, Name, Email string
	EmailVerified                bool
	Since                        when
}

func profileTabs(current string) []tab {
	return []tab{
		{Label: "Profile", Href: "/account", Current: current == "profile"},
		{Label: "Security", Href: "/account/security", Current: current == "security"},
	}
}

func (s *Server) profilePage(w http.ResponseWriter, r *http.Request) {
	_, _, u, orgs, ok := s.consoleUser(w, r, "/account")
	if !ok {
		return
	}
	page := profilePage{Title: "My profile", Username: u.Username, Name: u.Name, Email: u.Email,
		EmailVerified: u.EmailVerified, Since: whenOf(u.Created)}
	page.Nav = s.navFor(w, r, u, "profile", orgs)
	page.Nav.Tabs = profileTabs("profile")
	s.render(w, s.pages.profile, http.StatusOK, page)
}

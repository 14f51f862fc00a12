package authz

import (
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/tokens"
)

// securityPage is /account/security in each of its states: MFA off (offer
// setup), setting up (QR code, secret, code field), on (regenerate
// recovery codes, turn off), and the recovery codes shown once.
type securityPage struct {
	frame
	Title, Error, Notice, CSRF string
	// Why says what sent the person here, when something did.
	Why string
	// Challenge is a pending authorization that sent the person here to
	// enroll; Continue resumes it.
	Challenge, Continue string
	Username            string

	Enabled      bool
	EnabledAt    string
	RecoveryLeft int

	Setup      bool
	QR         template.URL
	Secret     string
	OTPAuthURL string

	Codes []string
	// CodesFile is the codes as a text file, for the download link.
	CodesFile template.URL
	// RequiredBy are the person's organizations that require MFA, which
	// turning it off would lock them out of.
	RequiredBy []string
	// PasskeysOn: this server can use passkeys (its issuer is a name).
	PasskeysOn bool
	Passkeys   []passkeyView
}

// account returns the signed-in person for one of our pages, or sends the
// browser to log in (with every factor they have) and come back to path.
func (s *Server) account(w http.ResponseWriter, r *http.Request, path string) (*LoginSession, string, *User, bool) {
	ctx := r.Context()
	ls, sid, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, "", nil, false
	}
	var u *User
	if ls != nil {
		if u, err = s.sessionUser(ctx, ls); err != nil {
			s.authorizeError(w, nil, err)
			return nil, "", nil, false
		}
	}
	st := step.Step{Kind: step.Password}
	if u != nil {
		// Our own pages ask for nothing beyond every factor the person has.
		if st, err = s.stepFor(ctx, step.Request{At: s.cfg.Now()}, ls, u); err != nil {
			s.authorizeError(w, nil, err)
			return nil, "", nil, false
		}
		if st.Kind == step.Done {
			return ls, sid, u, true
		}
	}
	next := pageFor(st)
	id, err := s.savePending(ctx, pendingAuthorization{Return: path, RequestedAt: s.cfg.Now()})
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, "", nil, false
	}
	http.Redirect(w, r, next+"?challenge="+id, http.StatusSeeOther)
	return nil, "", nil, false
}

// securityState fills the page from the store.
func (s *Server) securityState(w http.ResponseWriter, r *http.Request, u *User, page *securityPage) bool {
	ctx := r.Context()
	orgs, err := s.myOrgs(ctx, u)
	if err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	page.Nav = s.navFor(w, r, u, "profile", orgs)
	page.Nav.Tabs = profileTabs("security")
	page.Title, page.Username, page.CSRF = "My profile", u.Username, page.Nav.CSRF
	for _, o := range orgs {
		if o.org.MFARequired {
			page.RequiredBy = append(page.RequiredBy, o.org.Name)
		}
	}
	if len(page.Codes) > 0 {
		page.CodesFile = template.URL("data:text/plain;charset=utf-8," + url.PathEscape(
			"Stepup recovery codes for "+u.Username+" ("+s.cfg.Issuer+")\r\nEach code works once.\r\n\r\n"+strings.Join(page.Codes, "\r\n")+"\r\n"))
	}
	if c := r.FormValue("challenge"); c != "" {
		if p, err := s.loadPending(ctx, c); err == nil {
			page.Challenge, page.Continue = c, "/oauth2/authorize?resume="+c
			if p.Return != "" {
				page.Continue = p.Return
			}
			page.Why = s.stepWhy(ctx, p, u)
		}
	}
	keys, err := s.passkeys.list(ctx, u.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	page.Passkeys, page.PasskeysOn = passkeyViews(keys), s.passkeys.on()
	e, err := s.mfa.get(ctx, u.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	if e != nil {
		page.Enabled, page.EnabledAt, page.RecoveryLeft = true, e.EnabledAt.UTC().Format("2 January 2006"), e.recoveryLeft()
		return true
	}
	k, ok, err := s.mfa.pendingSetup(ctx, u.ID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	if ok {
		png, err := k.QRCodePNG(200)
		if err != nil {
			s.internalError(w, err)
			return false
		}
		page.Setup, page.Secret, page.OTPAuthURL = true, k.Secret, k.URL
		page.QR = template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
	}
	return true
}

func (s *Server) securityPage(w http.ResponseWriter, r *http.Request) {
	_, _, u, ok := s.account(w, r, "/account/security")
	if !ok {
		return
	}
	var page securityPage
	if s.securityState(w, r, u, &page) {
		s.render(w, s.pages.security, http.StatusOK, page)
	}
}

// securityPost runs one of the page's forms.
func (s *Server) securityPost(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if !s.postedForm(w, r, "Cannot change security settings") {
			return
		}
		ls, sid, u, ok := s.account(w, r, "/account/security")
		if !ok {
			return
		}
		code, addr := r.PostFormValue("code"), clientIP(r)
		var page securityPage
		var err error
		switch action {
		case "setup":
			if _, err = s.mfa.startSetup(ctx, u.ID, u.Username); err == nil {
				target := "/account/security"
				if c := r.PostFormValue("challenge"); c != "" {
					target += "?challenge=" + c
				}
				http.Redirect(w, r, target, http.StatusSeeOther)
				return
			}
		case "verify":
			if page.Codes, err = s.mfa.confirmSetup(ctx, u.ID, code, addr); err == nil {
				// Proving the new authenticator is a second factor.
				ls.addFactor(tokens.MethodOTP, "", s.cfg.Now())
				err = s.sessions.save(ctx, w, ls, sid)
				page.Notice = "Multi-factor authentication is on."
			}
		case "recovery-codes":
			if page.Codes, err = s.mfa.regenerate(ctx, u.ID, code, addr); err == nil {
				page.Notice = "New recovery codes are ready; the old ones no longer work."
			}
		case "disable":
			if err = s.mfa.disable(ctx, u.ID, code, addr); err == nil {
				page.Notice = "Multi-factor authentication is off."
			}
		}
		status := http.StatusOK
		if err != nil {
			st, msg, known := codeError(err)
			if !known {
				s.authorizeError(w, nil, err)
				return
			}
			status, page.Error = st, msg
		}
		if s.securityState(w, r, u, &page) {
			s.render(w, s.pages.security, status, page)
		}
	}
}

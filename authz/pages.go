package authz

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"time"
)

//go:embed web
var webFS embed.FS

type pages struct {
	login, message, otp, security, orgSecurity, invite, password *template.Template
	home, profile, orgGeneral, orgMembers, passkey               *template.Template
	device                                                       *template.Template
	css, js                                                      []byte
}

func newPages() (*pages, error) {
	parse := func(name string) (*template.Template, error) {
		return template.New(name).Funcs(template.FuncMap{"navOf": navOf}).ParseFS(webFS, "web/layout.html", "web/"+name)
	}
	var p pages
	var err error
	if p.login, err = parse("login.html"); err != nil {
		return nil, err
	}
	if p.message, err = parse("message.html"); err != nil {
		return nil, err
	}
	if p.otp, err = parse("otp.html"); err != nil {
		return nil, err
	}
	if p.security, err = parse("security.html"); err != nil {
		return nil, err
	}
	if p.orgSecurity, err = parse("org_security.html"); err != nil {
		return nil, err
	}
	if p.invite, err = parse("invite.html"); err != nil {
		return nil, err
	}
	if p.password, err = parse("password.html"); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		into **template.Template
		name string
	}{{&p.home, "home.html"}, {&p.profile, "profile.html"}, {&p.orgGeneral, "org_general.html"}, {&p.orgMembers, "org_members.html"}, {&p.passkey, "passkey.html"}, {&p.device, "device.html"}} {
		if *t.into, err = parse(t.name); err != nil {
			return nil, err
		}
	}
	if p.css, err = webFS.ReadFile("web/style.css"); err != nil {
		return nil, err
	}
	if p.js, err = webFS.ReadFile("web/console.js"); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *pages) style(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(p.css)
}

func (p *pages) script(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(p.js)
}

// frame is what a console page has around its content: the header's user
// menu, breadcrumbs and section tabs. Pages of a login in progress have
// none.
type frame struct{ Nav *navBar }

func (f frame) navBar() *navBar { return f.Nav }

type navBar struct {
	Username, Initial, CSRF string
	Section                 string // "home", "profile" or "org"
	Orgs                    []navOrg
	Crumbs                  []link
	Tabs                    []tab
}

type navOrg struct{ ID, Name string }

type link struct{ Label, Href string }

type tab struct {
	Label, Href string
	Current     bool
}

// navOf is the template's way to a page's frame, for pages that have one.
func navOf(page any) *navBar {
	if f, ok := page.(interface{ navBar() *navBar }); ok {
		return f.navBar()
	}
	return nil
}

// when is a time as the pages show it: UTC in words, which the script
// turns into the person's locale and time zone.
type when struct{ ISO, Text, Full string }

func whenOf(t time.Time) when {
	t = t.UTC()
	return when{ISO: t.Format(time.RFC3339), Text: t.Format("2 Jan 2006, 15:04 UTC"), Full: t.Format("Monday 2 January 2006, 15:04:05 UTC")}
}

// render writes a page, rendering to a buffer first so a template error
// never leaves half a page behind.
func (s *Server) render(w http.ResponseWriter, t *template.Template, status int, data any) {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "page", data); err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type messagePage struct {
	Title, Message string
	Error          bool
	// Confirm, when set, shows a button posting Hidden to this path.
	Confirm, ConfirmLabel, CSRF string
	Hidden                      map[string]string
}

func (s *Server) showMessage(w http.ResponseWriter, status int, p messagePage) {
	s.render(w, s.pages.message, status, p)
}

func (s *Server) showError(w http.ResponseWriter, status int, title, message string) {
	s.showMessage(w, status, messagePage{Title: title, Message: message, Error: true})
}

// CSRF: a random cookie, and in each form an HMAC of it under a key derived
// from the server secret. A page on another site can neither read the
// cookie nor compute the token.

func (s *Server) csrfCookieName() string { return cookieName(s.issuer, "stepup_csrf") }

// cookieName is a cookie's name for this issuer: __Host- bound on https;
// on plain http, where cookies ignore ports, with the port, so that two
// servers on one host (a local upstream provider, say) keep their
// sessions apart rather than overwrite each other's.
func cookieName(issuer *url.URL, base string) string {
	if issuer.Scheme == "https" {
		return "__Host-" + base
	}
	if p := issuer.Port(); p != "" {
		return base + "_" + p
	}
	return base
}

func (s *Server) csrfFor(value string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(value))
	return b64.EncodeToString(m.Sum(nil))
}

// browserID is this browser's random cookie, set first if it has none. It
// keys the CSRF tokens and binds SSO round trips to the browser that
// started them.
func (s *Server) browserID(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(s.csrfCookieName()); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	v := randomString(32)
	http.SetCookie(w, &http.Cookie{
		Name: s.csrfCookieName(), Value: v, Path: "/", HttpOnly: true,
		Secure: s.issuer.Scheme == "https", SameSite: http.SameSiteLaxMode,
	})
	r.AddCookie(&http.Cookie{Name: s.csrfCookieName(), Value: v}) // later reads in this request see it
	return v
}

// csrfToken returns the token for this browser's forms.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	return s.csrfFor(s.browserID(w, r))
}

// postedForm parses a page's form and checks its CSRF token, answering a
// failure itself with a page titled title.
func (s *Server) postedForm(w http.ResponseWriter, r *http.Request, title string) bool {
	if err := r.ParseForm(); err != nil || !s.csrfValid(r) {
		s.showError(w, http.StatusForbidden, title,
			"This form has expired or did not come from this site. Go back, reload the page and try again.")
		return false
	}
	return true
}

func (s *Server) csrfValid(r *http.Request) bool {
	c, err := r.Cookie(s.csrfCookieName())
	if err != nil || len(c.Value) != 43 {
		return false
	}
	return hmac.Equal([]byte(r.PostFormValue("csrf_token")), []byte(s.csrfFor(c.Value)))
}

// allowFormTarget widens the page's form-action to the origin a login will
// finally redirect to: browsers apply form-action to the redirects that
// follow a form submission. Loopback redirect URIs may use any port.
func allowFormTarget(w http.ResponseWriter, redirectURI string) {
	u, err := url.Parse(redirectURI)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return
	}
	origin := u.Scheme + "://" + u.Host
	if isLoopbackHost(u.Hostname()) {
		origin = u.Scheme + "://" + hostForCSP(u.Hostname()) + ":*"
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self' "+origin+"; frame-ancestors 'none'; base-uri 'none'")
}

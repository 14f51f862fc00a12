package authz

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/tokens"
)

type loginPage struct {
	Title, Client, Error, Username, CSRF, Challenge string
	// Passkeys: passwordless sign-in is offered.
	Passkeys bool
	// Note explains why a browser that had a session must sign in again.
	Note string
	SSO  []ssoLink
}

// ssoLink is a "Sign in with …" link on the login page.
type ssoLink struct{ ID, URL string }

func (s *Server) ssoLinks(challenge string) []ssoLink {
	var out []ssoLink
	for _, id := range s.sso.ids() {
		out = append(out, ssoLink{ID: id, URL: ssoLoginPath(id) + "?challenge=" + challenge})
	}
	return out
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	r, done := s.withRequestCache(r)
	defer done()
	challenge := r.URL.Query().Get("challenge")
	s.prefetchLogin(r.Context(), r, challenge, false)
	p, ok := s.pending(w, r, challenge)
	if !ok {
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	page := loginPage{
		Title: "Sign in", Client: s.clientName(p.Form.Get("client_id")), CSRF: s.csrfToken(w, r), Challenge: challenge,
		SSO: s.ssoLinks(challenge), Passkeys: s.passkeys.on(),
	}
	// A session cookie without a session: it expired, or ended elsewhere
	// (a password change, an administrator). Only then is the store asked.
	if s.sessions.hasCookie(r) {
		ls, _, err := s.sessions.get(r.Context(), r)
		if err != nil {
			s.authorizeError(w, nil, err)
			return
		}
		if ls == nil {
			page.Note = "Your session has ended: it expired, or was signed out elsewhere. Sign in again to continue."
		}
	}
	s.render(w, s.pages.login, http.StatusOK, page)
}

const maxCredentialLen = 1024

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r, done := s.withRequestCache(r)
	defer done()
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot sign in") {
		return
	}
	challenge := r.PostFormValue("challenge")
	username, password := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
	// The counters go with the first round trip: the pending authorization's.
	s.loginThrottle.prefetch(ctx, r, username)
	s.prefetchLogin(ctx, r, challenge, false)
	p, ok := s.pending(w, r, challenge)
	if !ok {
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	page := loginPage{Title: "Sign in", Client: s.clientName(p.Form.Get("client_id")), Username: username, CSRF: s.csrfToken(w, r),
		Challenge: challenge, SSO: s.ssoLinks(challenge), Passkeys: s.passkeys.on()}
	if username == "" || password == "" || len(username) > maxCredentialLen || len(password) > maxCredentialLen {
		page.Error = "Enter your username and password."
		s.render(w, s.pages.login, http.StatusBadRequest, page)
		return
	}

	refusal, account, err := s.loginThrottle.admit(ctx, r, username, func(ctx context.Context) (*User, error) {
		return s.loginAccount(ctx, username)
	})
	if err != nil || refusal != "" {
		if err != nil {
			s.authorizeError(w, nil, err)
			return
		}
		page.Error = refusal
		s.render(w, s.pages.login, http.StatusTooManyRequests, page)
		return
	}
	user := s.checkPassword(account, password)
	if user == nil {
		s.loginThrottle.failed(ctx, r, username)
		page.Error = "Incorrect username or password."
		s.render(w, s.pages.login, http.StatusUnauthorized, page)
		return
	}
	s.loginThrottle.succeeded(ctx, w, r, username, user)

	ls, oldID, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if ls == nil || ls.UserID != user.ID {
		ls = &LoginSession{UserID: user.ID, CreatedAt: s.cfg.Now(), person: user}
	}
	ls.addFactor(tokens.MethodPassword, "", s.cfg.Now())
	s.proceed(w, r, challenge, p, ls, s.sessions.saveSoon(ctx, w, ls, oldID))
}

// prefetchLogin queues, for one round trip, what a page of a sign-in in
// progress reads first: its pending authorization, the browser's session
// and, when the session cookie names the person, their record, enrollment
// and passkeys; for a page that checks a code (forCode), the code's
// throttle too. Where the cookie names nobody, the round trip is the
// page's first read; where it does, it is the person's read, made here.
func (s *Server) prefetchLogin(ctx context.Context, r *http.Request, challenge string, forCode bool) {
	if len(challenge) == 32 {
		prefetch(ctx, pendingNS, challenge)
	}
	person := s.sessions.prefetch(ctx, r)
	if person == "" || cacheOf(ctx) == nil {
		return
	}
	addr := ""
	if forCode {
		addr = clientIP(r)
	}
	s.mfa.prefetch(ctx, person, addr)
	s.passkeys.prefetch(ctx, person)
	// Its error, if the store fails, is the next read's to answer.
	_, _ = s.user(ctx, person)
}

// continueLogin sends the browser on once a factor is done: back to the
// authorization, which decides what else it needs; or, for an account
// page, through the second factor if the person has one.
func (s *Server) continueLogin(w http.ResponseWriter, r *http.Request, challenge string, p *pendingAuthorization, ls *LoginSession) {
	if p.Return == "" {
		http.Redirect(w, r, "/oauth2/authorize?resume="+challenge, http.StatusSeeOther)
		return
	}
	s.continueToPage(w, r, challenge, p, ls, nil)
}

// proceed is continueLogin for a factor this request proved, its session
// saved with saveSoon: the authorization goes on in this request, as
// /oauth2/authorize?resume would, from what the request has read already
// and without the browser's detour there. saved is confirmed before the
// answer.
func (s *Server) proceed(w http.ResponseWriter, r *http.Request, challenge string, p *pendingAuthorization, ls *LoginSession, saved func() error) {
	if p.Return == "" {
		s.resume(w, r, challenge, p, ls, saved)
		return
	}
	s.continueToPage(w, r, challenge, p, ls, saved)
}

// continueToPage sends the browser back to the account page p is for, or
// first to the second factor it still needs.
func (s *Server) continueToPage(w http.ResponseWriter, r *http.Request, challenge string, p *pendingAuthorization, ls *LoginSession, saved func() error) {
	ctx := r.Context()
	st, err := s.stepFor(ctx, step.Request{At: s.cfg.Now()}, ls, &User{ID: ls.UserID})
	if err == nil && saved != nil {
		err = saved()
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if st.Kind != step.Done {
		http.Redirect(w, r, pageFor(st)+"?challenge="+challenge, http.StatusSeeOther)
		return
	}
	_ = s.store.Delete(ctx, pendingNS, challenge)
	http.Redirect(w, r, p.Return, http.StatusSeeOther)
}

// midLogin is the sign-in in progress that a second-factor page belongs
// to: its pending authorization and the browser's session. Without a
// session the browser goes back to the password; either way false means
// answered.
func (s *Server) midLogin(w http.ResponseWriter, r *http.Request, challenge string) (*pendingAuthorization, *LoginSession, string, bool) {
	p, ok := s.pending(w, r, challenge)
	if !ok {
		return nil, nil, "", false
	}
	ls, sid, err := s.sessions.get(r.Context(), r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return nil, nil, "", false
	}
	if ls == nil {
		http.Redirect(w, r, pagePassword+"?challenge="+challenge, http.StatusSeeOther)
		return nil, nil, "", false
	}
	return p, ls, sid, true
}

type otpPage struct {
	Title, Why, Error, CSRF, Challenge string
	// Passkeys: the person has one, and may use it instead.
	Passkeys bool
}

// otpForm asks for the second factor of a person who has logged in with a
// password (or SSO): the code alone, never the password again.
func (s *Server) otpForm(w http.ResponseWriter, r *http.Request) {
	r, done := s.withRequestCache(r)
	defer done()
	challenge := r.URL.Query().Get("challenge")
	s.prefetchLogin(r.Context(), r, challenge, false)
	p, ls, _, ok := s.midLogin(w, r, challenge)
	if !ok {
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	keys, err := s.passkeys.has(r.Context(), ls.UserID)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	s.render(w, s.pages.otp, http.StatusOK, otpPage{Title: "Two-factor authentication", CSRF: s.csrfToken(w, r), Challenge: challenge,
		Why: s.stepWhy(r.Context(), p, &User{ID: ls.UserID}), Passkeys: keys})
}

func (s *Server) otpSubmit(w http.ResponseWriter, r *http.Request) {
	r, done := s.withRequestCache(r)
	defer done()
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot verify") {
		return
	}
	challenge := r.PostFormValue("challenge")
	s.prefetchLogin(ctx, r, challenge, true)
	p, ls, sid, ok := s.midLogin(w, r, challenge)
	if !ok {
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	page := otpPage{Title: "Two-factor authentication", CSRF: s.csrfToken(w, r), Challenge: challenge,
		Why: s.stepWhy(ctx, p, &User{ID: ls.UserID})}
	via, err := s.mfa.verify(ctx, ls.UserID, r.PostFormValue("code"), clientIP(r))
	if err != nil {
		if status, msg, ok := codeError(err); ok {
			page.Error = msg
			s.render(w, s.pages.otp, status, page)
			return
		}
		s.authorizeError(w, nil, err)
		return
	}
	if via == "totp" {
		via = ""
	}
	ls.addFactor(tokens.MethodOTP, via, s.cfg.Now())
	s.proceed(w, r, challenge, p, ls, s.sessions.saveSoon(ctx, w, ls, sid))
}

// codeError turns a second-factor outcome into what the page says.
func codeError(err error) (status int, msg string, ok bool) {
	var te throttledError
	switch {
	case errors.As(err, &te):
		return http.StatusTooManyRequests, "Too many wrong codes. Try again in " + tokens.HumanDuration(te.wait) + ".", true
	case errors.Is(err, errCodeMalformed):
		return http.StatusBadRequest, "Enter the 6-digit code from your authenticator app, or one of your recovery codes.", true
	case errors.Is(err, errCodeWrong):
		return http.StatusUnauthorized, "That code is not right. Check the time on your phone and try the current code.", true
	case errors.Is(err, errCodeReplayed):
		return http.StatusUnauthorized, "That code was already used. Wait for the next code and enter it.", true
	case errors.Is(err, errNoSetup):
		return http.StatusConflict, "Your authenticator setup expired or was removed. Start the setup again.", true
	}
	return 0, "", false
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientName is what pages call a client: its configured name, else its id.
func (s *Server) clientName(id string) string {
	if c, ok := s.clients.config(id); ok && c.Name != "" {
		return c.Name
	}
	return id
}

// stepWhy says why a login asks for more than a password, for the pages
// on the way: "ACME requires multi-factor authentication to continue to
// Stepup CLI." It is empty when nothing but the person's own settings
// asks.
func (s *Server) stepWhy(ctx context.Context, p *pendingAuthorization, u *User) string {
	to := "the Stepup console"
	var asked []string
	orgs := []string{}
	if p.Org != "" {
		orgs = append(orgs, p.Org)
	}
	if p.Form != nil {
		to = s.clientName(p.Form.Get("client_id"))
		asked = strings.Fields(p.Form.Get("amr"))
		for _, v := range strings.Fields(p.Form.Get("acr_values")) {
			if id, ok := strings.CutPrefix(v, orgACRPrefix); ok {
				orgs = append(orgs, id)
			}
		}
	}
	for _, id := range orgs {
		// Only an organization the person belongs to is named.
		o, _, err := s.orgOf(ctx, id, u.ID)
		if err != nil || o == nil {
			continue
		}
		if words := s.methodWords(securityOf(o).requirements().AMR); words != "" {
			return o.Name + " requires " + words + " to continue to " + to + "."
		}
	}
	if words := s.methodWords(asked); words != "" {
		return to + " asks for " + words + "."
	}
	return ""
}

// methodWords names amr values in a sentence.
func (s *Server) methodWords(amr []string) string {
	var parts []string
	for _, m := range amr {
		switch {
		case m == tokens.MethodMFA:
			parts = append(parts, "multi-factor authentication")
		case m == tokens.MethodPhishingResistant:
			parts = append(parts, "phishing-resistant multi-factor authentication (a passkey)")
		case m == tokens.MethodOTP:
			parts = append(parts, "a code from an authenticator app")
		case strings.HasPrefix(m, tokens.SSOPrefix):
			parts = append(parts, "single sign-on through "+s.sso.displayName(strings.TrimPrefix(m, tokens.SSOPrefix)))
		}
	}
	return strings.Join(parts, " and ")
}

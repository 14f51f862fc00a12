package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/email"
	"github.com/stepup-dev/stepup/tokens"
)

// Passwords at run time: a person changes theirs (the current one
// required), or has forgotten it and gets a link by email. Either way every
// other login of theirs ends (User.SignedOutAt): sessions in other
// browsers, refresh families, the access tokens of those logins.

type passwordPage struct {
	Title, Lead, Error, Notice, CSRF string
	Action, Button, SignIn           string
	AskEmail, AskCurrent, AskNew     bool
}

const (
	resetNS            = "password-reset"
	resetThrottle      = "password-reset-limit"
	resetTTL           = time.Hour
	resetPrefix        = "stpp_"
	maxResetsPer       = 3 // per address and per email, per window
	resetWindow        = time.Hour
	changePasswordPath = "/account/password"
)

// newPasswordProblem says what is wrong with a chosen password, or "".
func newPasswordProblem(pw, again string) string {
	switch {
	case len(pw) < minPasswordLen || len(pw) > maxCredentialLen:
		return fmt.Sprintf("Choose a password of at least %d characters.", minPasswordLen)
	case pw != again:
		return "The two passwords differ; type the same password twice."
	}
	return ""
}

// setPassword gives the person a new password and ends their other logins.
func (s *Server) setPassword(ctx context.Context, userID, password string) (*User, error) {
	hash, err := HashPassword(password)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	u, err := s.people.UpdateUser(ctx, userID, func(u *User) error {
		u.PasswordHash, u.SignedOutAt = hash, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	return u, s.revokeCertificates(ctx, certificatesOfPerson(userID, revokedPassword))
}

// passwordPageGet is GET /account/password.
func (s *Server) passwordPageGet(w http.ResponseWriter, r *http.Request) {
	if _, _, _, ok := s.account(w, r, changePasswordPath); !ok {
		return
	}
	s.render(w, s.pages.password, http.StatusOK, s.changeForm(w, r))
}

func (s *Server) changeForm(w http.ResponseWriter, r *http.Request) passwordPage {
	return passwordPage{Title: "Change your password", CSRF: s.csrfToken(w, r), Action: changePasswordPath, Button: "Change password",
		AskCurrent: true, AskNew: true, Lead: "Your other sessions, on other devices and in the CLI, will be signed out."}
}

// passwordPagePost is POST /account/password: this browser stays signed in,
// with a fresh login, and every other login ends.
func (s *Server) passwordPagePost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot change the password") {
		return
	}
	ls, sid, u, ok := s.account(w, r, changePasswordPath)
	if !ok {
		return
	}
	page := s.changeForm(w, r)
	if u.PasswordHash != "" && !CheckPassword(u.PasswordHash, r.PostFormValue("current_password")) {
		page.Error = "The current password is not right."
		s.render(w, s.pages.password, http.StatusUnauthorized, page)
		return
	}
	if msg := newPasswordProblem(r.PostFormValue("new_password"), r.PostFormValue("new_password_again")); msg != "" {
		page.Error = msg
		s.render(w, s.pages.password, http.StatusBadRequest, page)
		return
	}
	if _, err := s.setPassword(ctx, u.ID, r.PostFormValue("new_password")); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	// This browser's session began before the change: it starts anew, with
	// the factors it had, proved again just now by the password.
	fresh := &LoginSession{UserID: u.ID, CreatedAt: s.cfg.Now(), Factors: ls.Factors}
	fresh.addFactor(tokens.MethodPassword, "", s.cfg.Now())
	if err := s.sessions.save(ctx, w, fresh, sid); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	s.render(w, s.pages.password, http.StatusOK, passwordPage{Title: "Password changed",
		Notice: "Your password is changed. Your other sessions are signed out."})
}

// apiChangePassword is POST /api/me/password {"current_password",
// "new_password"}: every login ends, the caller's too.
func (s *Server) apiChangePassword(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r, useSecurity)
	if !ok {
		return
	}
	var body struct {
		Current string `json:"current_password"`
		New     string `json:"new_password"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"current_password": "…", "new_password": "…"}.`)
		return
	}
	if c.user.PasswordHash != "" && !CheckPassword(c.user.PasswordHash, body.Current) {
		writeError(w, http.StatusForbidden, "access_denied", "The current password is not right.")
		return
	}
	if msg := newPasswordProblem(body.New, body.New); msg != "" {
		writeError(w, http.StatusBadRequest, "invalid_request", msg)
		return
	}
	if _, err := s.setPassword(r.Context(), c.user.ID, body.New); err != nil {
		s.storeOrInternal(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// forgotPage is GET /password/forgot.
func (s *Server) forgotPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, s.pages.password, http.StatusOK, s.forgotForm(w, r))
}

func (s *Server) forgotForm(w http.ResponseWriter, r *http.Request) passwordPage {
	return passwordPage{Title: "Forgot your password?", CSRF: s.csrfToken(w, r), Action: "/password/forgot", Button: "Email me a link",
		AskEmail: true, Lead: "Enter your account's email address; we will send a link to choose a new password."}
}

// forgotPost is POST /password/forgot. Its answer is the same whether or
// not the address has an account, so that it tells nobody who does.
func (s *Server) forgotPost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot send the link") {
		return
	}
	page := s.forgotForm(w, r)
	addr, err := mail.ParseAddress(r.PostFormValue("email"))
	if err != nil || len(addr.Address) > 254 {
		page.Error = "Enter an email address like you@example.com."
		s.render(w, s.pages.password, http.StatusBadRequest, page)
		return
	}
	for _, key := range []string{"addr:" + addressKey(clientIP(r)), "email:" + strings.ToLower(addr.Address)} {
		n, err := s.store.Incr(ctx, resetThrottle, key, resetWindow)
		if err != nil {
			s.authorizeError(w, nil, err)
			return
		}
		if n > maxResetsPer {
			page.Error = "Too many links were asked for. Wait " + tokens.HumanDuration(resetWindow) + " and try again."
			s.render(w, s.pages.password, http.StatusTooManyRequests, page)
			return
		}
	}
	u, err := s.userByEmail(ctx, addr.Address)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if u != nil {
		s.sendReset(ctx, u)
	}
	s.render(w, s.pages.password, http.StatusOK, passwordPage{Title: "Check your email",
		Notice: "If " + addr.Address + " belongs to an account here, a link to choose a new password is on its way. It works once, for an hour."})
}

// sendReset mails a reset link; a failure is logged, not shown, since the
// page must not tell whether the account exists.
func (s *Server) sendReset(ctx context.Context, u *User) {
	secret := randomString(32)
	if err := s.store.Put(ctx, resetNS, s.linkDigest("password resets", resetPrefix+secret), []byte(u.ID), resetTTL); err != nil {
		s.log.Error("password reset", "user", u.ID, "err", err)
		return
	}
	link := s.cfg.Issuer + "/password/reset/" + resetPrefix + secret
	body := fmt.Sprintf("Hello %s,\r\n\r\nSomeone, probably you, asked to choose a new password for your Stepup account. To do so, open this link (it works once, for an hour):\r\n\r\n  %s\r\n\r\nIf it was not you, ignore this email: your password stays as it is.\r\n", email.OneLine(u.Username), link)
	msg, err := email.Compose(s.cfg.MailFrom, u.Email, "Choose a new Stepup password", body, s.cfg.Now())
	if err == nil {
		err = s.cfg.Mailer.Send(ctx, s.cfg.MailFrom, []string{u.Email}, msg)
	}
	if err != nil {
		s.log.Error("sending a password reset", "user", u.ID, "err", err)
	}
}

func (s *Server) resetForm(w http.ResponseWriter, r *http.Request) passwordPage {
	return passwordPage{Title: "Choose a new password", CSRF: s.csrfToken(w, r), Action: "/password/reset/" + r.PathValue("token"),
		Button: "Set password", AskNew: true, Lead: "Every session of yours will be signed out."}
}

func (s *Server) resetKey(r *http.Request) (string, bool) {
	token := r.PathValue("token")
	if !strings.HasPrefix(token, resetPrefix) || len(token) != len(resetPrefix)+43 {
		return "", false
	}
	return s.linkDigest("password resets", token), true
}

func (s *Server) resetGone(w http.ResponseWriter) {
	s.render(w, s.pages.password, http.StatusNotFound, passwordPage{Title: "Link not valid",
		Error:  "This link was already used or has expired. Ask for a new one.",
		Action: "", SignIn: "/password/forgot"})
}

// resetPage is GET /password/reset/{token}.
func (s *Server) resetPage(w http.ResponseWriter, r *http.Request) {
	key, ok := s.resetKey(r)
	if ok {
		_, err := s.store.Get(r.Context(), resetNS, key)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			s.authorizeError(w, nil, err)
			return
		}
		ok = err == nil
	}
	if !ok {
		s.resetGone(w)
		return
	}
	s.render(w, s.pages.password, http.StatusOK, s.resetForm(w, r))
}

// resetPost is POST /password/reset/{token}: the link is used up only by a
// password that is accepted.
func (s *Server) resetPost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot set the password") {
		return
	}
	key, ok := s.resetKey(r)
	if !ok {
		s.resetGone(w)
		return
	}
	if msg := newPasswordProblem(r.PostFormValue("new_password"), r.PostFormValue("new_password_again")); msg != "" {
		page := s.resetForm(w, r)
		page.Error = msg
		s.render(w, s.pages.password, http.StatusBadRequest, page)
		return
	}
	id, err := s.store.Take(ctx, resetNS, key)
	if errors.Is(err, storage.ErrNotFound) {
		s.resetGone(w)
		return
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if _, err := s.setPassword(ctx, string(id), r.PostFormValue("new_password")); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	s.render(w, s.pages.password, http.StatusOK, passwordPage{Title: "Password changed",
		Notice: "Your new password is set, and your sessions elsewhere are signed out. Sign in again from your application."})
}

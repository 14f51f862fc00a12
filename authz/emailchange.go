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

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/email"
	"github.com/stepup-dev/stepup/tokens"
)

// Changing one's email: the new address gets a link, and only opening it
// (proof that the mailbox is theirs) changes the account; the old address
// is told. Until then the account keeps its address.

const (
	emailChangeNS     = "email-change"
	emailChangeTTL    = 24 * time.Hour
	emailChangePrefix = "stpe_"
	emailChangePath   = "/account/email"
)

type emailChange struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

// startEmailChange checks the address and mails the link; the error is
// one to show as it is, or a store error.
func (s *Server) startEmailChange(ctx context.Context, u *User, raw string) (string, error) {
	addr, err := mail.ParseAddress(raw)
	if err != nil || addr.Address != strings.TrimSpace(raw) || len(addr.Address) > 254 {
		return "", errShow("Enter a plain email address like you@example.com.")
	}
	if strings.EqualFold(addr.Address, u.Email) {
		return "", errShow("That is already your address.")
	}
	if other, err := s.people.ByEmail(ctx, addr.Address); err == nil && other.ID != u.ID {
		return "", errShow("Another account has that address.")
	} else if err != nil && !errors.Is(err, directory.ErrNotFound) {
		return "", err
	}
	n, err := s.store.Incr(ctx, resetThrottle, "email-change:"+u.ID, resetWindow)
	if err != nil {
		return "", err
	}
	if n > maxResetsPer {
		return "", errShow("Too many changes were asked for. Wait " + tokens.HumanDuration(resetWindow) + " and try again.")
	}
	secret := randomString(32)
	data, _ := json.Marshal(emailChange{UserID: u.ID, Email: addr.Address})
	if err := s.store.Put(ctx, emailChangeNS, s.linkDigest("email changes", emailChangePrefix+secret), data, emailChangeTTL); err != nil {
		return "", err
	}
	link := s.cfg.Issuer + "/email/verify/" + emailChangePrefix + secret
	body := fmt.Sprintf("Hello %s,\r\n\r\nTo make %s the email address of your Stepup account, open this link (it works once, for a day):\r\n\r\n  %s\r\n\r\nIf you did not ask for this, ignore this email.\r\n", email.OneLine(u.Username), addr.Address, link)
	msg, err := email.Compose(s.cfg.MailFrom, addr.Address, "Confirm your new Stepup email address", body, s.cfg.Now())
	if err == nil {
		err = s.cfg.Mailer.Send(ctx, s.cfg.MailFrom, []string{addr.Address}, msg)
	}
	if err != nil {
		s.log.Error("sending an email change link", "user", u.ID, "err", err)
		return "", errShow("The email to " + addr.Address + " could not be sent; try again later.")
	}
	return addr.Address, nil
}

// errShow is a refusal whose text is for the person.
type errShow string

func (e errShow) Error() string { return string(e) }

// apiChangeEmail is POST /api/me/email {"email"} → 202 {"pending"}.
func (s *Server) apiChangeEmail(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r, useSecurity)
	if !ok {
		return
	}
	var body struct {
		Email string `json:"email"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"email": "…"}.`)
		return
	}
	addr, err := s.startEmailChange(r.Context(), c.user, body.Email)
	var show errShow
	switch {
	case errors.As(err, &show):
		writeError(w, http.StatusBadRequest, "invalid_request", string(show))
	case err != nil:
		s.storeOrInternal(w, err)
	default:
		writeJSON(w, http.StatusAccepted, map[string]string{"pending": addr,
			"message": "A link is on its way to " + addr + "; the address changes when it is opened."})
	}
}

func (s *Server) emailForm(w http.ResponseWriter, r *http.Request, u *User) passwordPage {
	return passwordPage{Title: "Change your email", CSRF: s.csrfToken(w, r), Action: emailChangePath, Button: "Send a link to the new address",
		AskEmail: true, Lead: "Your address is " + u.Email + ". It changes once you open the link we send to the new one."}
}

// emailPageGet is GET /account/email.
func (s *Server) emailPageGet(w http.ResponseWriter, r *http.Request) {
	if _, _, u, ok := s.account(w, r, emailChangePath); ok {
		s.render(w, s.pages.password, http.StatusOK, s.emailForm(w, r, u))
	}
}

// emailPagePost is POST /account/email.
func (s *Server) emailPagePost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot change the email") {
		return
	}
	_, _, u, ok := s.account(w, r, emailChangePath)
	if !ok {
		return
	}
	page := s.emailForm(w, r, u)
	addr, err := s.startEmailChange(r.Context(), u, r.PostFormValue("email"))
	var show errShow
	switch {
	case errors.As(err, &show):
		page.Error = string(show)
		s.render(w, s.pages.password, http.StatusBadRequest, page)
	case err != nil:
		s.authorizeError(w, nil, err)
	default:
		s.render(w, s.pages.password, http.StatusOK, passwordPage{Title: "Check your email",
			Notice: "A link is on its way to " + addr + ". Your address changes when you open it."})
	}
}

func (s *Server) emailChangeKey(r *http.Request) (string, bool) {
	token := r.PathValue("token")
	if !strings.HasPrefix(token, emailChangePrefix) || len(token) != len(emailChangePrefix)+43 {
		return "", false
	}
	return s.linkDigest("email changes", token), true
}

// verifyEmailPage is GET /email/verify/{token}: a button, so that a mail
// scanner following links changes nothing.
func (s *Server) verifyEmailPage(w http.ResponseWriter, r *http.Request) {
	key, ok := s.emailChangeKey(r)
	var ch emailChange
	if ok {
		data, err := s.store.Get(r.Context(), emailChangeNS, key)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			s.authorizeError(w, nil, err)
			return
		}
		ok = err == nil && json.Unmarshal(data, &ch) == nil
	}
	if !ok {
		s.showError(w, http.StatusNotFound, "Link not valid", "This link was already used or has expired. Ask for the change again.")
		return
	}
	s.showMessage(w, http.StatusOK, messagePage{Title: "Confirm your new email",
		Message: "Make " + ch.Email + " the address of your Stepup account?", Confirm: r.URL.Path, ConfirmLabel: "Use this address", CSRF: s.csrfToken(w, r)})
}

// verifyEmailPost is POST /email/verify/{token}.
func (s *Server) verifyEmailPost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot change the email") {
		return
	}
	key, ok := s.emailChangeKey(r)
	var data []byte
	var err error
	if ok {
		data, err = s.store.Take(ctx, emailChangeNS, key)
	}
	var ch emailChange
	if !ok || errors.Is(err, storage.ErrNotFound) || (err == nil && json.Unmarshal(data, &ch) != nil) {
		s.showError(w, http.StatusNotFound, "Link not valid", "This link was already used or has expired. Ask for the change again.")
		return
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	var old string
	u, err := s.people.UpdateUser(ctx, ch.UserID, func(u *User) error {
		old, u.Email, u.EmailVerified = u.Email, ch.Email, true
		return nil
	})
	switch {
	case errors.Is(err, directory.ErrEmailTaken):
		s.showError(w, http.StatusConflict, "Address in use", "Another account took "+ch.Email+" meanwhile; your address is unchanged.")
		return
	case err != nil:
		s.authorizeError(w, nil, err)
		return
	}
	if old != "" {
		body := fmt.Sprintf("Hello %s,\r\n\r\nThe email address of your Stepup account is now %s. If you did not do this, reset your password and tell your administrator.\r\n", email.OneLine(u.Username), ch.Email)
		if msg, err := email.Compose(s.cfg.MailFrom, old, "Your Stepup email address changed", body, s.cfg.Now()); err == nil {
			if err := s.cfg.Mailer.Send(ctx, s.cfg.MailFrom, []string{old}, msg); err != nil {
				s.log.Error("telling the old address of an email change", "user", u.ID, "err", err)
			}
		}
	}
	s.showMessage(w, http.StatusOK, messagePage{Title: "Email changed", Message: "Your account's address is now " + ch.Email + "."})
}

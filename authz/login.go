package authz

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

type loginPage struct {
	Title, Client, Error, Username, CSRF, Challenge string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("challenge")
	p, err := s.loadPending(r.Context(), challenge)
	if err != nil {
		s.pendingError(w, err)
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	s.render(w, s.pages.login, http.StatusOK, loginPage{
		Title: "Sign in", Client: p.Form.Get("client_id"), CSRF: s.csrfToken(w, r), Challenge: challenge,
	})
}

const (
	throttleNS       = "login-fail"
	maxCredentialLen = 1024
)

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.showError(w, http.StatusBadRequest, "Cannot sign in", "The form could not be read. Go back and try again.")
		return
	}
	if !s.csrfValid(r) {
		s.showError(w, http.StatusForbidden, "Cannot sign in",
			"This form has expired or did not come from this site. Go back, reload the page and try again.")
		return
	}
	challenge := r.PostFormValue("challenge")
	p, err := s.loadPending(ctx, challenge)
	if err != nil {
		s.pendingError(w, err)
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	username, password := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
	page := loginPage{Title: "Sign in", Client: p.Form.Get("client_id"), Username: username, CSRF: s.csrfToken(w, r), Challenge: challenge}
	if username == "" || password == "" || len(username) > maxCredentialLen || len(password) > maxCredentialLen {
		page.Error = "Enter your username and password."
		s.render(w, s.pages.login, http.StatusBadRequest, page)
		return
	}

	// Every attempt counts against the account before the password is
	// checked, so parallel guesses cannot slip past the limit; a success
	// clears the count. Per address, only failures count.
	account, addr := "acct:"+strings.ToLower(username), "addr:"+clientIP(r)
	attempts, err := s.store.Incr(ctx, throttleNS, account, s.cfg.FailureWindow)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	addrFailures, err := s.counter(ctx, addr)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if attempts > int64(s.cfg.MaxFailuresPerAccount) || addrFailures >= int64(s.cfg.MaxFailuresPerAddress) {
		page.Error = "Too many failed sign-in attempts. Wait " + s.cfg.FailureWindow.String() + " and try again."
		s.render(w, s.pages.login, http.StatusTooManyRequests, page)
		return
	}
	user, ok := s.users.authenticate(username, password)
	if !ok {
		_, _ = s.store.Incr(ctx, throttleNS, addr, s.cfg.FailureWindow)
		page.Error = "Incorrect username or password."
		s.render(w, s.pages.login, http.StatusUnauthorized, page)
		return
	}
	_ = s.store.Delete(ctx, throttleNS, account)

	ls, oldID, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if ls == nil || ls.UserID != user.ID {
		ls = &LoginSession{UserID: user.ID, CreatedAt: s.cfg.Now()}
	}
	ls.addFactor(tokens.MethodPassword, s.cfg.Now())
	if err := s.sessions.save(ctx, w, ls, oldID); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	http.Redirect(w, r, "/oauth2/authorize?resume="+challenge, http.StatusSeeOther)
}

// counter reads a throttle counter; an absent one is zero.
func (s *Server) counter(ctx context.Context, key string) (int64, error) {
	v, err := s.store.Get(ctx, throttleNS, key)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

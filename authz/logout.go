package authz

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"

	"github.com/stepup-dev/stepup/tokens"
)

// logout is OpenID Connect RP-initiated logout. With a valid id_token_hint
// the session ends at once; without one a page asks the person to confirm,
// so that a link on another site cannot log them out.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.showError(w, http.StatusBadRequest, "Cannot sign out", "The request could not be read.")
		return
	}
	hint, redirect, state, clientID := r.Form.Get("id_token_hint"), r.Form.Get("post_logout_redirect_uri"), r.Form.Get("state"), r.Form.Get("client_id")

	var hintSub string
	if hint != "" {
		payload, typ, err := s.keys.Verify(ctx, hint)
		var c struct {
			Sub string   `json:"sub"`
			Aud audience `json:"aud"`
		}
		if err != nil || typ != tokens.TypIDToken || json.Unmarshal(payload, &c) != nil {
			s.showError(w, http.StatusBadRequest, "Cannot sign out", "The application sent an ID token that this server did not issue.")
			return
		}
		hintSub = c.Sub
		if clientID == "" && len(c.Aud) > 0 {
			clientID = c.Aud[0]
		} else if clientID != "" && !slices.Contains(c.Aud, clientID) {
			s.showError(w, http.StatusBadRequest, "Cannot sign out", "client_id does not match the ID token's audience.")
			return
		}
	}
	if redirect != "" {
		c, ok := s.clients.config(clientID)
		if !ok || !slices.Contains(c.PostLogoutRedirectURIs, redirect) {
			s.showError(w, http.StatusBadRequest, "Cannot sign out",
				"The address to return to after signing out is not registered for this application.")
			return
		}
	}

	ls, sid, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	confirmed := hint != "" && (ls == nil || ls.UserID == hintSub)
	if r.Method == http.MethodPost {
		if !s.postedForm(w, r, "Cannot sign out") {
			return
		}
		confirmed = true
	}
	if !confirmed && ls != nil {
		hidden := map[string]string{}
		for _, k := range []string{"post_logout_redirect_uri", "state", "client_id"} {
			if v := r.Form.Get(k); v != "" {
				hidden[k] = v
			}
		}
		s.showMessage(w, http.StatusOK, messagePage{
			Title: "Sign out", Message: "Do you want to sign out of Stepup?",
			Confirm: "/oauth2/logout", ConfirmLabel: "Sign out", CSRF: s.csrfToken(w, r), Hidden: hidden,
		})
		return
	}
	if err := s.revokeCertificates(ctx, certificatesOfSession(ls)); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if err := s.sessions.end(ctx, w, sid); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if redirect != "" {
		u, _ := url.Parse(redirect)
		if state != "" {
			q := u.Query()
			q.Set("state", state)
			u.RawQuery = q.Encode()
		}
		http.Redirect(w, r, u.String(), http.StatusSeeOther)
		return
	}
	s.showMessage(w, http.StatusOK, messagePage{Title: "Signed out", Message: "You are signed out of Stepup."})
}

// audience reads a JWT aud claim, which may be a string or an array.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = audience{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

package authz

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// While a person logs in, the authorization request waits in the store as a
// pendingAuthorization under a random id (the "challenge"). The login pages
// carry only that id, and once the person has what the request needs, the
// browser comes back to /oauth2/authorize?resume=<id>, where the original
// request is replayed through fosite with its original time, so prompt=login
// and max_age are judged against when the client asked.
type pendingAuthorization struct {
	Form        url.Values `json:"form,omitempty"`
	RequestedAt time.Time  `json:"requested_at"`
	// Return, instead of Form, is a page of ours to go back to once the
	// person has logged in (an account page).
	Return string `json:"return,omitempty"`
}

const (
	pendingNS  = "authorize"
	pendingTTL = 30 * time.Minute
	// maxAgeLimit bounds max_age to something a clock can add.
	maxAgeLimit = 10 * 365 * 24 * time.Hour
)

func (s *Server) loadPending(ctx context.Context, id string) (*pendingAuthorization, error) {
	if len(id) != 32 {
		return nil, storage.ErrNotFound
	}
	data, err := s.store.Get(ctx, pendingNS, id)
	if err != nil {
		return nil, err
	}
	var p pendingAuthorization
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, storage.ErrNotFound
	}
	return &p, nil
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var (
		requestedAt time.Time
		challenge   string
	)
	if r.Method == http.MethodGet && r.URL.Query().Has("resume") {
		challenge = r.URL.Query().Get("resume")
		p, err := s.loadPending(ctx, challenge)
		if err != nil {
			s.pendingError(w, err)
			return
		}
		r = replay(r, p.Form)
		requestedAt = p.RequestedAt
	} else {
		requestedAt = s.cfg.Now()
		if err := r.ParseForm(); err == nil && (r.Form.Has("request") || r.Form.Has("request_uri")) {
			s.refuseRequestObject(w, r)
			return
		}
	}

	ar, err := s.oauth.NewAuthorizeRequest(ctx, r)
	if err == nil {
		err = s.checkAuthorizeRequest(ar)
	}
	if err != nil {
		s.authorizeError(w, ar, err)
		return
	}
	if req, ok := ar.(*fosite.AuthorizeRequest); ok {
		req.RequestedAt = requestedAt
	}

	ls, _, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, ar, err)
		return
	}
	var user *User
	if ls != nil {
		user, _ = s.users.get(ls.UserID)
	}
	next, err := s.nextStep(ctx, ar, ls, user, requestedAt)
	if err != nil {
		s.authorizeError(w, ar, err)
		return
	}
	if next != "" {
		if prompts(ar).Has("none") {
			s.authorizeError(w, ar, fosite.ErrLoginRequired.WithHint("The person must authenticate, and prompt=none forbids asking them."))
			return
		}
		if challenge == "" && ls != nil && user != nil {
			s.metrics.stepUps.WithLabelValues(stepUpReason(next)).Inc()
		}
		if challenge == "" {
			if challenge, err = s.savePending(ctx, pendingAuthorization{Form: ar.GetRequestForm(), RequestedAt: requestedAt}); err != nil {
				s.authorizeError(w, ar, err)
				return
			}
		}
		http.Redirect(w, r, next+"?challenge="+challenge, http.StatusSeeOther)
		return
	}

	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	for _, aud := range ar.GetRequestedAudience() {
		ar.GrantAudience(aud)
	}
	resp, err := s.oauth.NewAuthorizeResponse(ctx, ar, s.tokenSession(ar, ls, user, requestedAt))
	if err != nil {
		s.authorizeError(w, ar, err)
		return
	}
	if challenge != "" {
		// Done with it; if this delete fails it simply expires.
		_ = s.store.Delete(ctx, pendingNS, challenge)
	}
	resp.AddParameter("iss", s.cfg.Issuer) // RFC 9207
	s.oauth.WriteAuthorizeResponse(ctx, w, ar, resp)
	if challenge != "" && ls != nil {
		s.metrics.logins.WithLabelValues(amrLabel(ls.AMR())).Inc()
	}
}

// refuseRequestObject answers a request object, which Stepup does not
// support, as OpenID Connect asks: request_not_supported, by redirect when
// the rest of the request names a client and a redirect URI we trust.
func (s *Server) refuseRequestObject(w http.ResponseWriter, r *http.Request) {
	form := url.Values{}
	for k, v := range r.Form {
		if k != "request" && k != "request_uri" {
			form[k] = v
		}
	}
	ar, err := s.oauth.NewAuthorizeRequest(r.Context(), replay(r, form))
	if err == nil {
		err = fosite.ErrRequestNotSupported.WithHint("Stepup does not accept request objects; send the parameters in the query.")
	}
	s.authorizeError(w, ar, err)
}

// replay turns a stored authorization request back into an HTTP request.
func replay(r *http.Request, form url.Values) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Method = http.MethodGet
	r2.URL.RawQuery = form.Encode()
	r2.Form, r2.PostForm = nil, nil
	r2.Body = io.NopCloser(strings.NewReader(""))
	r2.ContentLength = 0
	return r2
}

func (s *Server) savePending(ctx context.Context, p pendingAuthorization) (string, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	id := randomString(24)
	return id, s.store.Put(ctx, pendingNS, id, data, pendingTTL)
}

func prompts(ar fosite.AuthorizeRequester) fosite.Arguments {
	return fosite.RemoveEmpty(strings.Split(ar.GetRequestForm().Get("prompt"), " "))
}

// Pages that collect what a request still needs.
const (
	pagePassword = "/login"
	pageOTP      = "/login/otp"
	pageEnroll   = "/account/security"
)

// nextStep returns the page that collects what the request still needs
// from this person, or "" when the session is enough: a password login,
// then a second factor if the person has one or the request demands one
// (enrolling an authenticator first if they have none).
func (s *Server) nextStep(ctx context.Context, ar fosite.AuthorizeRequester, ls *LoginSession, u *User, requestedAt time.Time) (string, error) {
	if u == nil || !fresh(ar, ls.PrimaryAt(), requestedAt) {
		return pagePassword, nil
	}
	demanded, err := s.demanded(ctx, ar, u)
	if err != nil {
		return "", err
	}
	for _, m := range demanded {
		id, ok := strings.CutPrefix(m, tokens.SSOPrefix)
		if !ok {
			continue
		}
		if _, known := s.sso.byID[id]; !known {
			return "", errUnmetAuthentication.WithHintf("Signing in through %s is required, and this server has no such provider.", truncate(id, 64))
		}
		if !fresh(ar, ls.factorAt(m), requestedAt) {
			return ssoLoginPath(id), nil
		}
	}
	enrolled, err := s.mfa.enabled(ctx, u.ID)
	if err != nil {
		return "", err
	}
	if !enrolled && !slices.Contains(demanded, tokens.MethodOTP) && !slices.Contains(demanded, tokens.MethodMFA) {
		return "", nil
	}
	if fresh(ar, ls.factorAt(tokens.MethodOTP), requestedAt) {
		return "", nil
	}
	if !enrolled {
		return pageEnroll, nil
	}
	return pageOTP, nil
}

// orgACRPrefix names a target organization in acr_values, so that its
// policy applies to the login (the console redirects once and comes back
// with a token that is enough).
const orgACRPrefix = "urn:stepup:org:"

// demanded is every method the request needs: its amr parameter, and the
// policy of any organization named in acr_values that the person belongs
// to (for anyone else it is ignored, revealing nothing).
func (s *Server) demanded(ctx context.Context, ar fosite.AuthorizeRequester, u *User) ([]string, error) {
	demanded := strings.Fields(ar.GetRequestForm().Get("amr"))
	for _, v := range strings.Fields(ar.GetRequestForm().Get("acr_values")) {
		id, ok := strings.CutPrefix(v, orgACRPrefix)
		if !ok {
			continue
		}
		o, ok := s.org(id)
		if !ok {
			continue
		}
		if _, member := o.role(u.ID); !member {
			continue
		}
		sec, err := s.security(ctx, o)
		if err != nil {
			return nil, err
		}
		demanded = append(demanded, sec.requirements().AMR...)
	}
	return demanded, nil
}

// fresh says whether a factor completed at `at` still counts for the
// request: prompt=login wants it done after the request was made, max_age
// no longer than that many seconds before.
func fresh(ar fosite.AuthorizeRequester, at, requestedAt time.Time) bool {
	if at.IsZero() {
		return false
	}
	if prompts(ar).Has("login") && at.Before(requestedAt) {
		return false
	}
	if v := ar.GetRequestForm().Get("max_age"); v != "" {
		secs, _ := strconv.ParseInt(v, 10, 64) // validated in checkAuthorizeRequest
		if at.Add(time.Duration(secs) * time.Second).Before(requestedAt) {
			return false
		}
	}
	return true
}

// supportedAMR are the methods a request may demand today.
var supportedAMR = []string{tokens.MethodPassword, tokens.MethodOTP, tokens.MethodMFA}

// checkAuthorizeRequest refuses, before anyone is asked to log in, a
// request that could never succeed.
func (s *Server) checkAuthorizeRequest(ar fosite.AuthorizeRequester) error {
	form := ar.GetRequestForm()
	if !ar.GetResponseTypes().ExactOne("code") {
		return fosite.ErrUnsupportedResponseType.WithHint("Stepup supports only response_type=code.")
	}
	challenge, method := form.Get("code_challenge"), form.Get("code_challenge_method")
	switch {
	case challenge == "" && ar.GetClient().IsPublic():
		return fosite.ErrInvalidRequest.WithHint("Public clients must use PKCE: send code_challenge and code_challenge_method=S256.")
	case challenge != "" && method != "S256":
		return fosite.ErrInvalidRequest.WithHint("code_challenge_method must be S256; plain is not allowed.")
	case challenge != "" && (len(challenge) < 43 || len(challenge) > 128):
		return fosite.ErrInvalidRequest.WithHint("code_challenge must be the 43-character base64url SHA-256 of the verifier.")
	}
	p := prompts(ar)
	for _, v := range p {
		if !slices.Contains([]string{"none", "login", "consent", "select_account"}, v) {
			return fosite.ErrInvalidRequest.WithHintf("Unknown prompt value %q.", truncate(v, 32))
		}
	}
	if p.Has("none") && len(p) > 1 {
		return fosite.ErrInvalidRequest.WithHint("prompt=none cannot be combined with other prompt values.")
	}
	if v := form.Get("max_age"); v != "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs < 0 || secs > int64(maxAgeLimit/time.Second) { // in seconds: multiplying first could overflow
			return fosite.ErrInvalidRequest.WithHint("max_age must be a whole number of seconds from 0 to ten years.")
		}
	}
	if v := form.Get("amr"); v != "" {
		if len(v) > 256 {
			return fosite.ErrInvalidRequest.WithHint("The amr parameter is too long.")
		}
		for _, m := range strings.Fields(v) {
			_, provider := s.sso.byID[strings.TrimPrefix(m, tokens.SSOPrefix)]
			if !slices.Contains(supportedAMR, m) && !(strings.HasPrefix(m, tokens.SSOPrefix) && provider) {
				return errUnmetAuthentication.WithHintf("This server cannot satisfy the authentication method %q.", truncate(m, 32))
			}
		}
	}
	return nil
}

// errUnmetAuthentication is OpenID Connect's error for an authentication
// requirement the server cannot meet.
var errUnmetAuthentication = &fosite.RFC6749Error{
	ErrorField:       "unmet_authentication_requirements",
	DescriptionField: "The requested authentication methods cannot be satisfied.",
	CodeField:        http.StatusBadRequest,
}

// authorizeError answers a failed authorization request: with a redirect
// carrying error and iss where the redirect URI is trusted, else with a page.
func (s *Server) authorizeError(w http.ResponseWriter, ar fosite.AuthorizeRequester, err error) {
	if isUnavailable(err) {
		s.log.Error("store unavailable", "err", err)
		w.Header().Set("Retry-After", "5")
		s.showError(w, http.StatusServiceUnavailable, "Temporarily unavailable",
			"The sign-in service cannot reach its data store. Nothing was changed; try again in a few seconds.")
		return
	}
	rfc := fosite.ErrorToRFC6749Error(err)
	if rfc.CodeField >= 500 {
		s.log.Error("authorize", "err", err, "debug", rfc.DebugField)
	}
	if ar == nil || !ar.IsRedirectURIValid() {
		s.showError(w, rfc.CodeField, "Cannot sign in",
			"The application sent a sign-in request that cannot be accepted: "+rfc.GetDescription())
		return
	}
	u := ar.GetRedirectURI()
	q := u.Query()
	q.Set("error", rfc.ErrorField)
	q.Set("error_description", rfc.GetDescription())
	if st := ar.GetState(); st != "" {
		q.Set("state", st)
	}
	q.Set("iss", s.cfg.Issuer)
	u.RawQuery = q.Encode()
	u.Fragment = ""
	w.Header().Set("Location", u.String())
	w.WriteHeader(http.StatusSeeOther)
}

// pending loads the challenge or answers why it cannot.
func (s *Server) pending(w http.ResponseWriter, r *http.Request, challenge string) (*pendingAuthorization, bool) {
	p, err := s.loadPending(r.Context(), challenge)
	if err != nil {
		s.pendingError(w, err)
		return nil, false
	}
	return p, true
}

func (s *Server) pendingError(w http.ResponseWriter, err error) {
	if errors.Is(err, storage.ErrNotFound) {
		s.showError(w, http.StatusBadRequest, "This sign-in has expired",
			"Go back to the application and start signing in again.")
		return
	}
	s.authorizeError(w, nil, err)
}

// tokenSession is what the tokens of this authorization will say about the
// person and how they authenticated.
func (s *Server) tokenSession(ar fosite.AuthorizeRequester, ls *LoginSession, u *User, requestedAt time.Time) *Session {
	sess := newSession()
	sess.Subject, sess.Username, sess.Grant = u.ID, u.Username, "authorization_code"
	sess.SSO = ls.ssoLogins()
	c := sess.Claims
	c.Subject = u.ID
	c.AuthTime = ls.AuthTime()
	c.RequestedAt = requestedAt
	c.AuthenticationMethodsReferences = ls.AMR()
	c.AuthenticationContextClassReference = acr(c.AuthenticationMethodsReferences)
	c.Extra = map[string]any{}
	scopes := ar.GetGrantedScopes()
	if scopes.Has("profile") {
		c.Extra["preferred_username"] = u.Username
		if u.Name != "" {
			c.Extra["name"] = u.Name
		}
	}
	if scopes.Has("email") && u.Email != "" {
		c.Extra["email"] = u.Email
		c.Extra["email_verified"] = u.EmailVerified
	}
	return sess
}

// acr names the assurance level the amr amounts to.
func acr(amr []string) string {
	if slices.Contains(amr, tokens.MethodMFA) {
		return "urn:stepup:acr:mfa"
	}
	return "urn:stepup:acr:pwd"
}

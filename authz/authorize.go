package authz

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// While a person logs in, the authorization request waits in the store as a
// pendingAuthorization under a random id (the "challenge"). The login pages
// carry only that id. After each factor the original request is replayed
// through fosite with its original time, so prompt=login and max_age are
// judged against when the client asked: by the password and code pages
// themselves (resume), or where the browser comes back from elsewhere (an
// SSO provider, a passkey, the account page) at
// /oauth2/authorize?resume=<id>.
type pendingAuthorization struct {
	Form        url.Values `json:"form,omitempty"`
	RequestedAt time.Time  `json:"requested_at"`
	// Return, instead of Form, is a page of ours to go back to once the
	// person has logged in (an account page).
	Return string `json:"return,omitempty"`
	// Org is the organization whose page sent the person here, so that the
	// pages on the way can say what it requires.
	Org string `json:"org,omitempty"`
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
	r, done := s.withRequestCache(r)
	defer done()
	ctx := r.Context()
	var (
		requestedAt time.Time
		challenge   string
		formErr     error
	)
	if r.Method == http.MethodGet && r.URL.Query().Has("resume") {
		challenge = r.URL.Query().Get("resume")
		s.prefetchLogin(ctx, r, challenge, false)
		p, err := s.loadPending(ctx, challenge)
		if err != nil {
			s.pendingError(w, err)
			return
		}
		r = replay(r, p.Form)
		requestedAt = p.RequestedAt
	} else {
		requestedAt = s.cfg.Now()
		if err := r.ParseMultipartForm(maxBody); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			s.unreadableForm(w, err)
			return
		}
		if problem := loopbackProblem(r.Form.Get("redirect_uri")); problem != "" {
			s.showError(w, http.StatusBadRequest, "Cannot sign in",
				"The application asked to be sent back to "+strconv.Quote(truncate(r.Form.Get("redirect_uri"), 200))+
					", which cannot be accepted: "+problem+". A loopback redirect URI is http://127.0.0.1:PORT/path or http://[::1]:PORT/path exactly as registered, with any port from 1 to 65535.")
			return
		}
		if r.Form.Has("request") || r.Form.Has("request_uri") {
			s.refuseRequestObject(w, r)
			return
		}
		form, tooLong := authorizeForm(r.Form)
		if tooLong != nil && r.Form.Has("redirect_uri") && !form.Has("redirect_uri") {
			// Without it fosite would fall back on the registered redirect
			// URI, and the client asked for another.
			s.authorizeError(w, nil, tooLong)
			return
		}
		// From here on fosite, the pending authorization and the grant see
		// only what authorizeForm kept.
		r = replay(r, form)
		formErr = tooLong
	}

	ar, err := s.oauth.NewAuthorizeRequest(ctx, r)
	if err == nil {
		err = s.checkAuthorizeRequest(ar)
	}
	if formErr != nil {
		// fosite ran without the oversized parameter only to learn whether
		// the client and redirect URI can be trusted with the answer.
		err = formErr
	}
	if err != nil {
		s.authorizeError(w, ar, err)
		return
	}
	if req, ok := ar.(*fosite.AuthorizeRequest); ok {
		req.RequestedAt = requestedAt
	}

	if challenge == "" {
		s.prefetchLogin(ctx, r, "", false)
	}
	ls, _, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, ar, err)
		return
	}
	s.decide(w, r, ar, challenge, requestedAt, ls, nil)
}

// resume is /oauth2/authorize?resume=challenge within a request that has
// just proved a factor and saved ls with saveSoon (see proceed): the
// stored request replayed through fosite with its original time.
func (s *Server) resume(w http.ResponseWriter, r *http.Request, challenge string, p *pendingAuthorization, ls *LoginSession, saved func() error) {
	r = replay(r, p.Form)
	ar, err := s.oauth.NewAuthorizeRequest(r.Context(), r)
	if err == nil {
		err = s.checkAuthorizeRequest(ar)
	}
	if err != nil {
		if serr := saved(); serr != nil {
			err = serr
		}
		s.authorizeError(w, ar, err)
		return
	}
	if req, ok := ar.(*fosite.AuthorizeRequest); ok {
		req.RequestedAt = p.RequestedAt
	}
	s.decide(w, r, ar, challenge, p.RequestedAt, ls, saved)
}

// decide answers an authorization request for the browser's session ls
// (nil: none): with the page that collects what it still needs, or with
// the code. challenge is its pending authorization, "" for a request
// that has none yet. saved, when not nil, is a session write this
// request made and must confirm before it answers (see saveSoon).
func (s *Server) decide(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, challenge string, requestedAt time.Time, ls *LoginSession, saved func() error) {
	ctx := r.Context()
	// fail answers err, after keeping the factor the request proved,
	// which does not depend on the authorization.
	fail := func(err error) {
		if saved != nil && !isUnavailable(err) {
			if serr := saved(); serr != nil {
				err = serr
			}
		}
		s.authorizeError(w, ar, err)
	}
	confirm := func() bool {
		if saved == nil {
			return true
		}
		if err := saved(); err != nil {
			s.authorizeError(w, ar, err)
			return false
		}
		return true
	}
	var user *User
	var err error
	if ls != nil {
		if user, err = s.sessionUser(ctx, ls); err != nil {
			fail(err)
			return
		}
	}
	st, err := s.nextStep(ctx, ar, ls, user, requestedAt)
	if err != nil {
		fail(err)
		return
	}
	if st.Kind != step.Done {
		next := pageFor(st)
		if prompts(ar).Has("none") {
			fail(fosite.ErrLoginRequired.WithHint("The person must authenticate, and prompt=none forbids asking them."))
			return
		}
		if challenge == "" && ls != nil && user != nil {
			s.metrics.stepUps.WithLabelValues(stepUpReason(st)).Inc()
		}
		if challenge == "" {
			// The pending authorization goes to the store with the count
			// that allows it, and is taken back if the count refuses it:
			// what an address keeps stays within its limit.
			var stored func() error
			challenge, stored = s.savePendingSoon(ctx, pendingAuthorization{Form: ar.GetRequestForm(), RequestedAt: requestedAt})
			allowed, err := s.allowPending(ctx, r)
			if err != nil {
				fail(err)
				return
			}
			if !allowed {
				later(ctx, s.store, storage.DeleteOp(pendingNS, challenge), true)
				minutes := strconv.Itoa(int(pendingLimitWindow / time.Minute))
				w.Header().Set("Retry-After", strconv.Itoa(int(pendingLimitWindow/time.Second)))
				s.showError(w, http.StatusTooManyRequests, "Too many sign-ins started",
					"Too many sign-ins were started from your network and not finished. Wait "+minutes+
						" minutes, then start signing in again from the application.")
				return
			}
			if err := stored(); err != nil {
				fail(err)
				return
			}
		}
		if !confirm() {
			return
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
	if challenge != "" {
		// Done with it, in the round trip that writes the grant (if that
		// fails, the person starts again); a delete that fails simply
		// expires.
		later(ctx, s.store, storage.DeleteOp(pendingNS, challenge), false)
	}
	// fosite writes the code and its PKCE and OpenID Connect records one
	// call each; a transaction makes them one write of the grant.
	tx, err := s.grants.BeginTX(ctx)
	if err != nil {
		fail(err)
		return
	}
	resp, err := s.oauth.NewAuthorizeResponse(tx, ar, s.tokenSession(ar, ls, user, requestedAt))
	if err == nil {
		err = s.grants.Commit(tx)
	}
	if err != nil {
		fail(err)
		return
	}
	if !confirm() {
		return
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
	// The state may well be inside the request object, where fosite cannot
	// see it, so its complaint about a missing or short state is not the
	// answer. It checks the state last: by then the client and the
	// redirect URI have passed.
	if err == nil || errors.Is(err, fosite.ErrInvalidState) {
		err = fosite.ErrRequestNotSupported.WithHint("Stepup does not accept request objects; send the parameters in the query.")
	}
	s.authorizeError(w, ar, err)
}

// unreadableForm answers an authorization request whose parameters cannot
// be read.
func (s *Server) unreadableForm(w http.ResponseWriter, err error) {
	if tooLarge(err) {
		s.showError(w, http.StatusRequestEntityTooLarge, "Cannot sign in",
			"The application sent a sign-in request larger than this server accepts. Go back to the application and try again.")
		return
	}
	s.authorizeError(w, nil, fosite.ErrInvalidRequest.WithHint(
		"The request's parameters could not be read; send them in the query or as an application/x-www-form-urlencoded body."))
}

// authorizeParams are the parameters of an authorization request that
// fosite or Stepup read, with the most bytes each may have (all its values
// together). The form waits in the store while the person logs in, and is
// kept with the grant after, so nothing else is kept and nothing is large.
var authorizeParams = []struct {
	name string
	max  int
}{
	{"response_type", 512}, {"client_id", 512}, {"redirect_uri", 1024}, {"scope", 512}, {"state", 512},
	{"nonce", 512}, {"code_challenge", 512}, {"code_challenge_method", 512}, {"response_mode", 512},
	{"audience", 512}, {"prompt", 512}, {"max_age", 512}, {"acr_values", 512}, {"amr", 512},
	{"login_hint", 512}, {"id_token_hint", 2048}, {"ui_locales", 512}, {"claims_locales", 512}, {"display", 512},
	// Kept so that fosite answers registration_not_supported.
	{"registration", 2048},
}

// maxAuthorizeForm bounds the kept form as it is stored, JSON-encoded:
// escaping can make that several times the parameters' own length.
const maxAuthorizeForm = 8 << 10

// authorizeForm returns the parameters of in that authorizeParams lists.
// When one is too long, or all of them together are, it also returns the
// invalid_request to answer with; the form it returns then lacks the
// oversized parameter, so that fosite can still say whether the client and
// redirect URI are to be trusted with that answer.
func authorizeForm(in url.Values) (url.Values, error) {
	form := url.Values{}
	var tooLong error
	for _, p := range authorizeParams {
		vs, ok := in[p.name]
		if !ok {
			continue
		}
		n := 0
		for _, v := range vs {
			n += len(v)
		}
		if n > p.max {
			if tooLong == nil {
				tooLong = fosite.ErrInvalidRequest.WithHintf("The %s parameter is longer than the %d bytes this server accepts.", p.name, p.max)
			}
			continue
		}
		form[p.name] = vs
	}
	if tooLong == nil {
		if data, err := json.Marshal(form); err != nil || len(data) > maxAuthorizeForm {
			tooLong = fosite.ErrInvalidRequest.WithHintf("The authorization request's parameters add up to more than the %d bytes this server accepts.", maxAuthorizeForm)
		}
	}
	return form, tooLong
}

// loopbackProblem says what is wrong with a loopback redirect URI, or ""
// when nothing is (or it is not one). fosite lets a loopback redirect URI
// differ from the registered one in its port (RFC 8252) but compares the
// rest after parsing, which lets through a user name before the host, a
// percent-encoded path and ports no socket can have. The URI the client
// gets sent back to must be the one it registered, so these are refused
// here, on the string as sent.
func loopbackProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return ""
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return ""
	}
	switch {
	case !strings.HasPrefix(raw, "http://"):
		return "it must start with http:// in lower case"
	case u.User != nil:
		return "it has a user name before the host (the part up to @)"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "it has a fragment (#…)"
	case u.EscapedPath() != u.Path:
		return "its path uses percent-encoding or characters that need it"
	}
	if strings.HasSuffix(u.Host, ":") {
		return "it has an empty port after the colon"
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return "its port must be a number from 1 to 65535 without leading zeros"
		}
	}
	return ""
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

const (
	pendingLimitNS = "authorize-addr"
	// One address may start this many sign-ins per window. Each waits
	// pendingTTL whether or not anyone comes back to it, so the limit bounds
	// what one address keeps in the store (with maxAuthorizeForm, about
	// 25 MiB at worst), while a busy office behind one address stays under
	// it. (stepupd bench's login scenario, at about 50 a second, reaches it
	// after some 20 s.)
	maxPendingPerAddress = 1000
	// An IPv6 network of many /64s (a /48 holds 65,536) shares a larger
	// allowance, so that it cannot multiply the bound by its size.
	maxPendingPerNetwork = 10 * maxPendingPerAddress
	pendingLimitWindow   = 10 * time.Minute
)

// allowPending counts a new pending authorization against the client's
// address (and, for IPv6, its /48) and says whether both are within their
// limits.
func (s *Server) allowPending(ctx context.Context, r *http.Request) (bool, error) {
	ip := clientIP(r)
	n, err := s.store.Incr(ctx, pendingLimitNS, addressKey(ip), pendingLimitWindow)
	if err != nil || n > maxPendingPerAddress {
		return false, err
	}
	if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
		p, _ := a.WithZone("").Prefix(48)
		n, err := s.store.Incr(ctx, pendingLimitNS, "net:"+p.String(), pendingLimitWindow)
		if err != nil || n > maxPendingPerNetwork {
			return false, err
		}
	}
	return true, nil
}

// addressKey is what the per-address limit counts by: the address, or for
// IPv6 its /64, since one host commonly has a whole /64 to choose from.
func addressKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}

func (s *Server) savePending(ctx context.Context, p pendingAuthorization) (string, error) {
	id, stored := s.savePendingSoon(ctx, p)
	return id, stored()
}

// savePendingSoon is savePending with the write queued for the request's
// next round trip (see later); stored waits for it.
func (s *Server) savePendingSoon(ctx context.Context, p pendingAuthorization) (id string, stored func() error) {
	data, err := json.Marshal(p)
	if err != nil {
		return "", func() error { return err }
	}
	id = randomString(24)
	put := later(ctx, s.store, storage.PutOp(pendingNS, id, data, pendingTTL), false)
	return id, func() error { return put.outcome(ctx).Err }
}

func prompts(ar fosite.AuthorizeRequester) fosite.Arguments {
	return fosite.RemoveEmpty(strings.Split(ar.GetRequestForm().Get("prompt"), " "))
}

// Pages that collect what a request still needs.
const (
	pagePassword = "/login"
	pageOTP      = "/login/otp"
	pageEnroll   = "/account/security"
	pagePasskey  = "/login/passkey"
)

// pageFor is the page that collects a step.
func pageFor(st step.Step) string {
	switch st.Kind {
	case step.Password:
		return pagePassword
	case step.Code:
		return pageOTP
	case step.Enroll:
		return pageEnroll
	case step.SSO:
		return ssoLoginPath(st.Provider)
	case step.Passkey:
		return pagePasskey
	}
	return ""
}

// nextStep is what the request still needs from this person (step.Next),
// after refusing what no step could give: a provider this server does not
// have.
func (s *Server) nextStep(ctx context.Context, ar fosite.AuthorizeRequester, ls *LoginSession, u *User, requestedAt time.Time) (step.Step, error) {
	req := step.Request{Login: prompts(ar).Has("login"), At: requestedAt}
	if v := ar.GetRequestForm().Get("max_age"); v != "" {
		secs, _ := strconv.ParseInt(v, 10, 64) // validated in checkAuthorizeRequest
		d := time.Duration(secs) * time.Second
		req.MaxAge = &d
	}
	if u == nil {
		return step.Next(req, nil, step.Enrollment{}), nil
	}
	demanded, err := s.demanded(ctx, ar, u)
	if err != nil {
		return step.Step{}, err
	}
	for _, m := range demanded {
		if id, ok := strings.CutPrefix(m, tokens.SSOPrefix); ok {
			if _, known := s.sso.byID[id]; !known {
				return step.Step{}, errUnmetAuthentication.WithHintf("Signing in through %s is required, and this server has no such provider.", truncate(id, 64))
			}
		}
	}
	req.AMR = demanded
	return s.stepFor(ctx, req, ls, u)
}

// stepFor is step.Next for this person's session and enrollment.
func (s *Server) stepFor(ctx context.Context, req step.Request, ls *LoginSession, u *User) (step.Step, error) {
	s.mfa.prefetch(ctx, u.ID, "")
	s.passkeys.prefetch(ctx, u.ID)
	enrolled, err := s.mfa.enabled(ctx, u.ID)
	if err != nil {
		return step.Step{}, err
	}
	keys, err := s.passkeys.has(ctx, u.ID)
	if err != nil {
		return step.Step{}, err
	}
	return step.Next(req, ls.proved(), step.Enrollment{TOTP: enrolled, Passkeys: keys}), nil
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
		o, _, err := s.orgOf(ctx, id, u.ID)
		if err != nil {
			return nil, err
		}
		if o == nil {
			continue
		}
		demanded = append(demanded, securityOf(o).requirements().AMR...)
	}
	return demanded, nil
}

// supportedAMR are the methods a request may demand today.
var supportedAMR = []string{tokens.MethodPassword, tokens.MethodOTP, tokens.MethodMFA, tokens.MethodPhishingResistant}

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
		s.showError(w, rfc.CodeField, "Cannot sign in", refusedRequestText(rfc))
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
	sess.OTPAt = ls.factorAt(tokens.MethodOTP)
	sess.KeyAt = ls.keyAt()
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

// refusedRequestText is what the error page says about a request that
// cannot be answered by a redirect: in the words of a person who followed
// a link, with fosite's own description only where no better words exist.
func refusedRequestText(rfc *fosite.RFC6749Error) string {
	const tell = " If you followed a link from an application, tell its developers; there is nothing to fix on your side."
	switch {
	case rfc.ErrorField == fosite.ErrInvalidClient.ErrorField:
		return "The application that sent you here is not registered with this sign-in service." + tell
	case strings.Contains(rfc.HintField, "pre-registered redirect"):
		return "The application asked to return to an address that is not registered for it, so signing in here could hand your login to someone else." + tell
	}
	return "The application sent a sign-in request that cannot be accepted: " + rfc.GetDescription() + tell
}

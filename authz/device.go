package authz

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	fositestorage "github.com/ory/fosite/storage"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// The device authorization grant (RFC 8628) logs in a machine without a
// browser: the machine asks POST /oauth2/device_authorization for a device
// code and a short user code, the person enters the user code at /device in
// a browser where they are signed in (stepping up there as the request or
// an organization demands) and allows it, and the machine's next poll of
// the token endpoint gets the tokens of that browser session, as an
// authorization code would.
//
// The store keeps one record per device code under an HMAC of it (the
// code itself is a bearer secret), and the user code, also as an HMAC,
// pointing at that record. Every poll is one Update of the record, which
// both stores run atomically: the poll that finds it approved marks it
// used, so exactly one poll gets the tokens.

const (
	deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"
	pageDevice      = "/device"

	deviceNS     = "device"
	deviceUserNS = "device-user"
	deviceFailNS = "device-fail"
	deviceLockNS = "device-lock"

	deviceCodePrefix = "stpd_"
	// userCodeAlphabet is RFC 8628 §6.1's: no vowels (no words), no digits
	// (no 0/O or 1/I), unambiguous in any case.
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
	// devicePollSlack forgives polls this much early: a client's ticker
	// jitters, and the request takes time on the way.
	devicePollSlack = time.Second
	// deviceSlowDownStep is what RFC 8628 §3.5 adds to the interval on
	// each slow_down, on both sides.
	deviceSlowDownStep = 5 * time.Second
)

// The token endpoint admits the grant type, and discovery names it.
func init() { grantTypes = append(grantTypes, deviceGrantType) }

// deviceState is where a device code stands.
type deviceState string

const (
	devicePending  deviceState = "pending"
	deviceApproved deviceState = "approved"
	deviceDenied   deviceState = "denied"
	deviceUsed     deviceState = "used" // its tokens were issued
)

// deviceGrant is one device authorization request, from the device's ask
// to the poll that takes its tokens.
type deviceGrant struct {
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes,omitempty"`
	// Form is what the request demands of the login (amr, max_age,
	// acr_values) with its client_id, in the shape of an authorization
	// request's, so that the step-up pages can say who asks for what.
	Form        url.Values    `json:"form"`
	UserCode    string        `json:"user_code"` // as shown, XXXX-XXXX
	RequestedAt time.Time     `json:"requested_at"`
	ExpiresAt   time.Time     `json:"expires_at"`
	Interval    time.Duration `json:"interval"`
	LastPoll    time.Time     `json:"last_poll,omitzero"`
	State       deviceState   `json:"state"`
	// UserID and Session are the person who allowed it and what the
	// tokens will say about their login.
	UserID  string   `json:"user_id,omitempty"`
	Session *Session `json:"session,omitempty"`
}

// routeDevice mounts the device authorization grant (RFC 8628): its
// endpoint and the /device page.
func (s *Server) routeDevice(r Router, page, h func(http.HandlerFunc) http.Handler) {
	r.Method(http.MethodPost, "/oauth2/device_authorization", h(s.deviceAuthorization))
	r.Method(http.MethodGet, pageDevice, page(s.devicePage))
	r.Method(http.MethodPost, pageDevice, page(s.devicePost))
}

func (s *Server) deviceDigest(code string) string { return s.linkDigest("device codes", code) }
func (s *Server) userCodeDigest(code string) string {
	return s.linkDigest("device user codes", code)
}

// newUserCode draws eight letters of the alphabet uniformly (a byte past
// the last whole multiple of 20 is drawn again) and shows them as
// XXXX-XXXX.
func newUserCode() string {
	out := make([]byte, 0, userCodeLen+1)
	buf := make([]byte, 2*userCodeLen)
	for len(out) < userCodeLen+1 {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if b >= 240 || len(out) == userCodeLen+1 {
				continue
			}
			if len(out) == userCodeLen/2 {
				out = append(out, '-')
			}
			out = append(out, userCodeAlphabet[b%20])
		}
	}
	return string(out)
}

// normalizeUserCode reads a user code as a person may type it: any case,
// with or without the dash, with spaces. It returns the code as shown
// (XXXX-XXXX), or false when it cannot be one.
func normalizeUserCode(in string) (string, bool) {
	if len(in) > 64 {
		return "", false
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(in) {
		switch {
		case r == '-' || r == ' ' || r == '\t':
		case strings.ContainsRune(userCodeAlphabet, r):
			b.WriteRune(r)
		default:
			return "", false
		}
	}
	c := b.String()
	if len(c) != userCodeLen {
		return "", false
	}
	return c[:userCodeLen/2] + "-" + c[userCodeLen/2:], true
}

// Errors of the token endpoint for this grant (RFC 8628 §3.5), all 400.
var (
	errAuthorizationPending = &fosite.RFC6749Error{ErrorField: "authorization_pending", CodeField: http.StatusBadRequest,
		DescriptionField: "The person has not yet allowed or denied the device login."}
	errSlowDown = &fosite.RFC6749Error{ErrorField: "slow_down", CodeField: http.StatusBadRequest,
		DescriptionField: "The device polls faster than the interval; wait 5 seconds longer between polls from now on."}
	errExpiredToken = &fosite.RFC6749Error{ErrorField: "expired_token", CodeField: http.StatusBadRequest,
		DescriptionField: "The device code has expired; start the device login again."}
	errDeviceDenied = &fosite.RFC6749Error{ErrorField: "access_denied", CodeField: http.StatusBadRequest,
		DescriptionField: "The person denied the device login."}
)

// deviceForm checks what a device authorization request demands of the
// login, as checkAuthorizeRequest does for the authorization endpoint,
// and returns it in the shape of an authorization request's form.
func (s *Server) deviceForm(clientID string, in url.Values) (url.Values, error) {
	form := url.Values{"client_id": {clientID}}
	if v := in.Get("max_age"); v != "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs < 0 || secs > int64(maxAgeLimit/time.Second) {
			return nil, fosite.ErrInvalidRequest.WithHint("max_age must be a whole number of seconds from 0 to ten years.")
		}
		form.Set("max_age", v)
	}
	if v := in.Get("amr"); v != "" {
		if len(v) > 256 {
			return nil, fosite.ErrInvalidRequest.WithHint("The amr parameter is too long.")
		}
		for _, m := range strings.Fields(v) {
			_, provider := s.sso.byID[strings.TrimPrefix(m, tokens.SSOPrefix)]
			if !slices.Contains(supportedAMR, m) && !(strings.HasPrefix(m, tokens.SSOPrefix) && provider) {
				return nil, errUnmetAuthentication.WithHintf("This server cannot satisfy the authentication method %q.", truncate(m, 32))
			}
		}
		form.Set("amr", v)
	}
	if v := in.Get("acr_values"); v != "" {
		if len(v) > 512 {
			return nil, fosite.ErrInvalidRequest.WithHint("The acr_values parameter is too long.")
		}
		form.Set("acr_values", v)
	}
	return form, nil
}

// deviceAuthorization is POST /oauth2/device_authorization (RFC 8628
// §3.1–3.2).
func (s *Server) deviceAuthorization(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	fail := func(err error) {
		if isUnavailable(err) {
			s.unavailable(w, err)
			return
		}
		s.oauth.WriteAccessError(ctx, w, fosite.NewAccessRequest(newSession()), err)
	}
	if err := r.ParseForm(); err != nil || len(r.PostForm) == 0 && r.Header.Get("Authorization") == "" {
		fail(fosite.ErrInvalidRequest.WithHint("Send client_id and scope as an application/x-www-form-urlencoded POST body."))
		return
	}
	if id := r.PostForm.Get("client_id"); id != "" {
		if _, ok := s.clients.config(id); !ok {
			fail(fosite.ErrInvalidClient.WithHintf("There is no client with id %q.", truncate(id, 64)))
			return
		}
	}
	client, err := s.oauth.(*fosite.Fosite).AuthenticateClient(ctx, r, r.PostForm)
	if err != nil {
		fail(err)
		return
	}
	if !client.GetGrantTypes().Has(deviceGrantType) {
		fail(fosite.ErrUnauthorizedClient.WithHintf("The client %q may not use the device authorization grant (%s).", truncate(client.GetID(), 64), deviceGrantType))
		return
	}
	scopes := fosite.RemoveEmpty(strings.Split(r.PostForm.Get("scope"), " "))
	for _, scope := range scopes {
		if !fosite.ExactScopeStrategy(client.GetScopes(), scope) {
			fail(fosite.ErrInvalidScope.WithHintf("The client may not request scope %q.", truncate(scope, 64)))
			return
		}
	}
	form, err := s.deviceForm(client.GetID(), r.PostForm)
	if err != nil {
		fail(err)
		return
	}
	// Each device code waits in the store until it expires, whether or
	// not anyone enters it, as a pending sign-in does: the same limit per
	// address bounds both.
	if allowed, err := s.allowPending(ctx, r); err != nil || !allowed {
		if err != nil {
			fail(err)
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(pendingLimitWindow/time.Second)))
		writeError(w, http.StatusTooManyRequests, "slow_down",
			"Too many sign-ins were started from your network and not finished. Wait "+tokens.HumanDuration(pendingLimitWindow)+", then start again.")
		return
	}
	now := s.cfg.Now()
	g := deviceGrant{ClientID: client.GetID(), Scopes: scopes, Form: form, RequestedAt: now,
		ExpiresAt: now.Add(s.cfg.DeviceCodeTTL), Interval: s.cfg.DevicePollInterval, State: devicePending}
	deviceCode := deviceCodePrefix + randomString(32)
	digest := s.deviceDigest(deviceCode)
	// The record lives on past its expiry, so that a late poll hears
	// expired_token rather than that the code never was.
	keep := 2 * s.cfg.DeviceCodeTTL
	for attempt := 0; ; attempt++ {
		g.UserCode = newUserCode()
		data, err := json.Marshal(g)
		if err == nil {
			err = s.store.Put(ctx, deviceNS, digest, data, keep)
		}
		if err == nil {
			key, _ := normalizeUserCode(g.UserCode)
			err = s.store.Create(ctx, deviceUserNS, s.userCodeDigest(key), []byte(digest), keep)
		}
		if err == nil {
			break
		}
		// A user code still in use by another device: draw again. With
		// 20^8 codes that happens about never.
		if !errors.Is(err, storage.ErrAlreadyExists) || attempt == 4 {
			fail(err)
			return
		}
	}
	verify := s.cfg.Issuer + pageDevice
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               deviceCode,
		"user_code":                 g.UserCode,
		"verification_uri":          verify,
		"verification_uri_complete": verify + "?user_code=" + url.QueryEscape(g.UserCode),
		"expires_in":                int(s.cfg.DeviceCodeTTL / time.Second),
		"interval":                  int(s.cfg.DevicePollInterval / time.Second),
	})
}

// The /device page.

type devicePage struct {
	Title, Error, CSRF, Username string
	// Code is the user code: as typed, on the entry form; as shown, on the
	// confirmation.
	Code string
	// Confirm asks Allow or Deny for Client's request, which wants
	// Scopes.
	Confirm bool
	Client  string
	Scopes  []scopeLine
}

type scopeLine struct{ Name, Words string }

// scopeWords says what a scope lets the device do.
var scopeWords = map[string]string{
	"openid":         "Confirm who you are",
	"offline_access": "Stay signed in until you sign it out",
	"profile":        "See your name and username",
	"email":          "See your email address",
}

func (s *Server) devicePage(w http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("user_code")
	ls, _, u, ok := s.account(w, r, deviceBack(code))
	if !ok {
		return
	}
	page := devicePage{Title: "Sign in a device", CSRF: s.csrfToken(w, r), Username: u.Username, Code: code}
	if code == "" {
		s.render(w, s.pages.device, http.StatusOK, page)
		return
	}
	s.deviceConfirm(w, r, ls, u, page)
}

// deviceBack is the page to come back to after signing in or stepping up.
func deviceBack(code string) string {
	if code == "" {
		return pageDevice
	}
	if c, ok := normalizeUserCode(code); ok {
		code = c
	}
	return pageDevice + "?user_code=" + url.QueryEscape(truncate(code, 64))
}

func (s *Server) devicePost(w http.ResponseWriter, r *http.Request) {
	if !s.postedForm(w, r, "Cannot sign in the device") {
		return
	}
	code := r.PostFormValue("user_code")
	ls, _, u, ok := s.account(w, r, deviceBack(code))
	if !ok {
		return
	}
	page := devicePage{Title: "Sign in a device", CSRF: s.csrfToken(w, r), Username: u.Username, Code: code}
	switch decision := r.PostFormValue("decision"); decision {
	case "":
		s.deviceConfirm(w, r, ls, u, page)
	case "allow", "deny":
		s.deviceDecide(w, r, ls, u, page, decision == "allow")
	default:
		s.showError(w, http.StatusBadRequest, "Cannot sign in the device", "Choose Allow or Deny.")
	}
}

// deviceRefusal is why a code cannot be confirmed, in the page's words.
type deviceRefusal struct {
	status  int
	message string
}

func (e *deviceRefusal) Error() string { return e.message }

// deviceLookup finds the pending request of a user code, counting wrong
// codes against the browser, the person and the address.
func (s *Server) deviceLookup(ctx context.Context, w http.ResponseWriter, r *http.Request, u *User, code string) (string, *deviceGrant, error) {
	key, ok := normalizeUserCode(code)
	if !ok {
		return "", nil, &deviceRefusal{http.StatusBadRequest,
			"That is not a device code. A code has eight letters, such as BCDF-GHJK; enter it as your device shows it."}
	}
	keys := s.deviceThrottleKeys(w, r, u)
	if wait, err := s.deviceThrottled(ctx, keys); err != nil || wait > 0 {
		if err != nil {
			return "", nil, err
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)))
		return "", nil, &deviceRefusal{http.StatusTooManyRequests,
			"Too many wrong codes. Try again in " + tokens.HumanDuration(wait) + "."}
	}
	wrong := &deviceRefusal{http.StatusNotFound,
		"That code is not right. Check it against the code your device shows, or start again on the device."}
	digest, err := s.store.Get(ctx, deviceUserNS, s.userCodeDigest(key))
	if errors.Is(err, storage.ErrNotFound) {
		if err := s.deviceFailed(ctx, keys); err != nil {
			return "", nil, err
		}
		return "", nil, wrong
	}
	if err != nil {
		return "", nil, err
	}
	g, err := s.deviceGrant(ctx, string(digest))
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil, wrong
	}
	if err != nil {
		return "", nil, err
	}
	if err := g.open(s.cfg.Now()); err != nil {
		return "", nil, err
	}
	return string(digest), g, nil
}

// open says why a request can no longer be decided, if it cannot.
func (g *deviceGrant) open(now time.Time) error {
	switch {
	case g.State != devicePending:
		return &deviceRefusal{http.StatusConflict,
			"This code was already used. If you did not use it, start again on your device to get a new one."}
	case !now.Before(g.ExpiresAt):
		return &deviceRefusal{http.StatusGone, "This code has expired. Start again on your device to get a new one."}
	}
	return nil
}

func (s *Server) deviceGrant(ctx context.Context, digest string) (*deviceGrant, error) {
	data, err := s.store.Get(ctx, deviceNS, digest)
	if err != nil {
		return nil, err
	}
	var g deviceGrant
	if err := json.Unmarshal(data, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// deviceThrottleKeys are what wrong codes count against: this browser,
// the signed-in person (who may use many browsers) and the address.
func (s *Server) deviceThrottleKeys(w http.ResponseWriter, r *http.Request, u *User) []throttleKey {
	perBrowser := int64(s.cfg.MaxFailuresPerAccount)
	return []throttleKey{
		{"browser:" + s.browserID(w, r), perBrowser},
		{"user:" + u.ID, 2 * perBrowser},
		{"addr:" + addressKey(clientIP(r)), int64(s.cfg.MaxFailuresPerAddress)},
	}
}

type throttleKey struct {
	key   string
	limit int64
}

// deviceThrottled is how long until the next code may be tried: the
// longest of the locks on keys.
func (s *Server) deviceThrottled(ctx context.Context, keys []throttleKey) (time.Duration, error) {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.key
	}
	locks, err := s.store.GetMany(ctx, deviceLockNS, names...)
	if err != nil {
		return 0, err
	}
	var wait time.Duration
	for _, until := range locks {
		if unix, err := strconv.ParseInt(string(until), 10, 64); until != nil && err == nil {
			wait = max(wait, time.Unix(unix, 0).Sub(s.cfg.Now()))
		}
	}
	return wait, nil
}

// deviceFailed counts a wrong code; a key at its limit is locked for the
// failure window.
func (s *Server) deviceFailed(ctx context.Context, keys []throttleKey) error {
	window := s.cfg.FailureWindow
	for _, k := range keys {
		n, err := s.store.Incr(ctx, deviceFailNS, k.key, window)
		if err != nil {
			return err
		}
		if n >= k.limit {
			until := strconv.FormatInt(s.cfg.Now().Add(window).Unix(), 10)
			if err := s.store.Create(ctx, deviceLockNS, k.key, []byte(until), window); err != nil && !errors.Is(err, storage.ErrAlreadyExists) {
				return err
			}
		}
	}
	return nil
}

// deviceRefused answers a lookup that failed: on the entry form, or as the
// error it is.
func (s *Server) deviceRefused(w http.ResponseWriter, page devicePage, err error) {
	var d *deviceRefusal
	if !errors.As(err, &d) {
		s.authorizeError(w, nil, err)
		return
	}
	page.Error = d.message
	s.render(w, s.pages.device, d.status, page)
}

// deviceStep sends the browser to collect what the request still needs
// (its amr and max_age, and the policy of an organization it names that the
// person belongs to), as orgGate does, and reports whether the session is
// enough. As at the authorization endpoint, max_age counts back from when
// the device asked, so that a sign-in made for it is fresh however long
// the person took.
func (s *Server) deviceStep(w http.ResponseWriter, r *http.Request, g *deviceGrant, ls *LoginSession, u *User, back string) bool {
	ctx := r.Context()
	now := s.cfg.Now()
	want := tokens.Requirements{}
	var err error
	// demanded reads only the request's form.
	if want.AMR, err = s.demanded(ctx, &fosite.AuthorizeRequest{Request: fosite.Request{Form: g.Form}}, u); err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	req := step.Request{AMR: want.AMR, At: g.RequestedAt}
	if v := g.Form.Get("max_age"); v != "" {
		secs, _ := strconv.ParseInt(v, 10, 64) // checked in deviceForm
		d := time.Duration(secs) * time.Second
		req.MaxAge, want.MaxAge = &d, &secs
	}
	st, err := s.stepFor(ctx, req, ls, u)
	if err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	if _, known := s.sso.byID[st.Provider]; st.Kind == step.SSO && !known {
		s.showError(w, http.StatusForbidden, "More authentication is required",
			"Signing in through "+truncate(st.Provider, 64)+" is required, and this server has no such provider. Ask the organization's owners.")
		return false
	}
	if missing := tokens.Missing(want, ls.AMR(), ls.AuthTime(), g.RequestedAt); st.Kind == step.Done && missing.Satisfied() {
		return true
	}
	if st.Kind == step.Done {
		// Nothing this server can collect gives what is missing.
		s.showError(w, http.StatusForbidden, "More authentication is required",
			"The device asks for more than this sign-in can give. Start again on the device.")
		return false
	}
	id, err := s.savePending(ctx, pendingAuthorization{Return: back, Form: g.Form, RequestedAt: now})
	if err != nil {
		s.authorizeError(w, nil, err)
		return false
	}
	http.Redirect(w, r, pageFor(st)+"?challenge="+id, http.StatusSeeOther)
	return false
}

// deviceConfirm shows the request of a user code, to allow or deny.
func (s *Server) deviceConfirm(w http.ResponseWriter, r *http.Request, ls *LoginSession, u *User, page devicePage) {
	_, g, err := s.deviceLookup(r.Context(), w, r, u, page.Code)
	if err != nil {
		s.deviceRefused(w, page, err)
		return
	}
	if !s.deviceStep(w, r, g, ls, u, deviceBack(g.UserCode)) {
		return
	}
	page.Confirm, page.Code, page.Client = true, g.UserCode, s.clientName(g.ClientID)
	for _, scope := range g.Scopes {
		words, ok := scopeWords[scope]
		if !ok {
			words = "Use " + scope
		}
		page.Scopes = append(page.Scopes, scopeLine{Name: scope, Words: words})
	}
	s.render(w, s.pages.device, http.StatusOK, page)
}

// deviceDecide records Allow (with the session the tokens will carry) or
// Deny, if the request is still open.
func (s *Server) deviceDecide(w http.ResponseWriter, r *http.Request, ls *LoginSession, u *User, page devicePage, allow bool) {
	ctx := r.Context()
	digest, g, err := s.deviceLookup(ctx, w, r, u, page.Code)
	if err != nil {
		s.deviceRefused(w, page, err)
		return
	}
	if allow && !s.deviceStep(w, r, g, ls, u, deviceBack(g.UserCode)) {
		return
	}
	var sess *Session
	if allow {
		ar := fosite.NewAuthorizeRequest()
		for _, scope := range g.Scopes {
			ar.GrantScope(scope)
		}
		sess = s.tokenSession(ar, ls, u, g.RequestedAt)
		sess.Grant = deviceGrantType
	}
	now := s.cfg.Now()
	err = s.store.Update(ctx, deviceNS, digest, 2*s.cfg.DeviceCodeTTL, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, &deviceRefusal{http.StatusGone, "This code has expired. Start again on your device to get a new one."}
		}
		var cur deviceGrant
		if err := json.Unmarshal(old, &cur); err != nil {
			return nil, err
		}
		if err := cur.open(now); err != nil {
			return nil, err
		}
		cur.State, cur.UserID = deviceDenied, u.ID
		if allow {
			cur.State, cur.Session = deviceApproved, sess
		}
		return json.Marshal(cur)
	})
	if err != nil {
		s.deviceRefused(w, page, err)
		return
	}
	if !allow {
		s.showMessage(w, http.StatusOK, messagePage{Title: "Device not signed in",
			Message: "You denied the sign-in of " + s.clientName(g.ClientID) + ". The device was told so; you can close this page."})
		return
	}
	s.showMessage(w, http.StatusOK, messagePage{Title: "Device signed in",
		Message: s.clientName(g.ClientID) + " is signed in as " + u.Username + ". You can return to your terminal."})
}

// The token endpoint's side.

// deviceGrantFactory composes the grant into fosite (see compose).
func (s *Server) deviceGrantFactory(config fosite.Configurator, store any, strategy any) any {
	st := strategy.(*compose.CommonStrategy)
	return &deviceGrantHandler{srv: s, store: store.(*oauthStore), tokens: st.CoreStrategy,
		idTokens: &openid.IDTokenHandleHelper{IDTokenStrategy: st.OpenIDConnectTokenStrategy}, config: config}
}

// deviceGrantHandler is grant_type=urn:ietf:params:oauth:grant-type:device_code.
type deviceGrantHandler struct {
	srv   *Server
	store deviceTokenStorage
	// tokens makes the access and refresh tokens, idTokens the ID token,
	// as for an authorization code.
	tokens interface {
		oauth2.AccessTokenStrategy
		oauth2.RefreshTokenStrategy
	}
	idTokens *openid.IDTokenHandleHelper
	config   interface {
		fosite.RefreshTokenScopesProvider
	}
}

// deviceTokenStorage is where the grant's tokens go: one batch per family.
type deviceTokenStorage interface {
	oauth2.AccessTokenStorage
	oauth2.RefreshTokenStorage
	fositestorage.Transactional
}

var (
	_ fosite.TokenEndpointHandler = (*deviceGrantHandler)(nil)
	_ deviceTokenStorage          = (*oauthStore)(nil)
)

func (h *deviceGrantHandler) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	return r.GetGrantTypes().ExactOne(deviceGrantType)
}

func (h *deviceGrantHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

// HandleTokenEndpointRequest is one poll: one atomic Update of the device
// code's record, which either says how the request stands or, once it is
// allowed, marks it used and takes its session.
func (h *deviceGrantHandler) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	client := r.GetClient()
	if !client.GetGrantTypes().Has(deviceGrantType) {
		return fosite.ErrUnauthorizedClient.WithHintf("The client may not use grant_type=%s.", deviceGrantType)
	}
	code := r.GetRequestForm().Get("device_code")
	if code == "" {
		return fosite.ErrInvalidRequest.WithHint("device_code is missing.")
	}
	invalid := fosite.ErrInvalidGrant.WithHint("The device code is not valid.")
	if !strings.HasPrefix(code, deviceCodePrefix) || len(code) != len(deviceCodePrefix)+43 {
		return invalid
	}
	s := h.srv
	now := s.cfg.Now()
	var (
		outcome error
		got     deviceGrant
	)
	err := s.store.Update(ctx, deviceNS, s.deviceDigest(code), s.cfg.DeviceCodeTTL, func(old []byte) ([]byte, error) {
		outcome, got = nil, deviceGrant{}
		if old == nil {
			return nil, invalid
		}
		var g deviceGrant
		if err := json.Unmarshal(old, &g); err != nil {
			return nil, err
		}
		switch {
		case g.ClientID != client.GetID():
			return nil, invalid
		case g.State == deviceUsed:
			return nil, fosite.ErrInvalidGrant.WithHint("The device code was already used.")
		case !now.Before(g.ExpiresAt):
			return nil, errExpiredToken
		case g.State == deviceDenied:
			return nil, errDeviceDenied
		case g.State == deviceApproved:
			got = g
			g.State, g.Session = deviceUsed, nil
			return json.Marshal(g)
		}
		outcome = errAuthorizationPending
		if !g.LastPoll.IsZero() && now.Sub(g.LastPoll) < g.Interval-devicePollSlack {
			g.Interval += deviceSlowDownStep
			outcome = errSlowDown
		}
		g.LastPoll = now
		return json.Marshal(g)
	})
	if err != nil {
		return err
	}
	if outcome != nil {
		return outcome
	}
	if got.Session == nil {
		return fosite.ErrServerError.WithDebug("an approved device grant without a session")
	}
	sess := got.Session
	sess.SetExpiresAt(fosite.AccessToken, now.Add(s.cfg.AccessTokenTTL).Round(time.Second))
	sess.SetExpiresAt(fosite.RefreshToken, now.Add(s.cfg.RefreshTokenTTL).Round(time.Second))
	r.SetSession(sess)
	r.SetRequestedScopes(got.Scopes)
	for _, scope := range got.Scopes {
		r.GrantScope(scope)
	}
	return nil
}

// PopulateTokenEndpointResponse issues what an authorization code's
// exchange would: the access token, a refresh token with offline_access
// (for a client that may refresh), an ID token with openid.
func (h *deviceGrantHandler) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, resp fosite.AccessResponder) (err error) {
	if !h.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	access, accessSig, err := h.tokens.GenerateAccessToken(ctx, r)
	if err != nil {
		return err
	}
	var refresh, refreshSig string
	if r.GetGrantedScopes().HasOneOf(h.config.GetRefreshTokenScopes(ctx)...) && r.GetClient().GetGrantTypes().Has("refresh_token") {
		if refresh, refreshSig, err = h.tokens.GenerateRefreshToken(ctx, r); err != nil {
			return err
		}
	}
	// The ID token is made from a copy: its claims (exp, at_hash) are not
	// the stored session's.
	idReq := &fosite.Request{ID: r.GetID(), RequestedAt: r.GetRequestedAt(), Client: r.GetClient(),
		GrantedScope: r.GetGrantedScopes(), Form: url.Values{}, Session: r.GetSession().Clone()}
	tctx, err := fositestorage.MaybeBeginTx(ctx, h.store)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = fositestorage.MaybeRollbackTx(tctx, h.store)
		}
	}()
	if err = h.store.CreateAccessTokenSession(tctx, accessSig, r.Sanitize(nil)); err != nil {
		return err
	}
	if refreshSig != "" {
		if err = h.store.CreateRefreshTokenSession(tctx, refreshSig, accessSig, r.Sanitize(nil)); err != nil {
			return err
		}
	}
	if err = fositestorage.MaybeCommitTx(tctx, h.store); err != nil {
		return err
	}
	resp.SetAccessToken(access)
	resp.SetTokenType("bearer")
	resp.SetExpiresIn(r.GetSession().GetExpiresAt(fosite.AccessToken).Sub(h.srv.cfg.Now()).Round(time.Second))
	resp.SetScopes(r.GetGrantedScopes())
	if refresh != "" {
		resp.SetExtra("refresh_token", refresh)
	}
	if r.GetGrantedScopes().Has("openid") {
		if sess, ok := idReq.Session.(openid.Session); ok {
			sess.IDTokenClaims().AccessTokenHash = h.idTokens.GetAccessTokenHash(ctx, r, resp)
		}
		if err := h.idTokens.IssueExplicitIDToken(ctx, h.srv.cfg.IDTokenTTL, idReq, resp); err != nil {
			return err
		}
	}
	return nil
}

package authz

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// Passkeys (WebAuthn): a person registers passkeys or security keys on
// My profile → Security, and uses one as the second factor after the
// password, or alone as a passwordless sign-in where the key verified
// them (a PIN or biometric). The relying-party id is the issuer's host.
//
// What a key adds to amr (RFC 8176): hwk, or swk for a platform
// authenticator that gave no attestation of its hardware; user when it
// verified the person; and, derived by tokens.AMR, mfa (with a password
// or SSO login before it, or with user alone) and phr, phishing-resistant
// MFA, which an organization may require.
//
// Each ceremony's challenge is kept in the store for five minutes and
// taken once (atomically, on every replica), bound to the browser that
// began it. Sign counters are checked: a counter that goes back means a
// copied key, and the assertion is refused and logged.

// routePasskeys mounts the WebAuthn ceremonies: registering a passkey,
// and using one to sign in.
func (s *Server) routePasskeys(r Router, page, h func(http.HandlerFunc) http.Handler) {
	r.Method(http.MethodPost, "/account/security/passkeys/options", page(s.passkeyRegisterOptions))
	r.Method(http.MethodPost, "/account/security/passkeys", page(s.passkeyRegister))
	r.Method(http.MethodPost, "/account/security/passkeys/remove", page(s.passkeyRemove))
	r.Method(http.MethodGet, pagePasskey, page(s.passkeyPage))
	r.Method(http.MethodPost, pagePasskey+"/options", page(s.passkeyLoginOptions))
	r.Method(http.MethodPost, pagePasskey, page(s.passkeyLogin))
	r.Method(http.MethodGet, pagePasskey+"/continue", page(s.passkeyContinue))
}

const (
	passkeysNS = "passkeys"
	// passkeyOwnerNS claims each credential id for one person (WebAuthn
	// §7.1: an id registered to anyone is refused).
	passkeyOwnerNS = "passkey-owner"
	ceremonyNS     = "passkey-ceremony"
	ceremonyTTL    = 5 * time.Minute
	maxPasskeys    = 20
	maxKeyName     = 64
	maxAssertion   = 16 << 10
)

// passkey is one registered credential of a person.
type passkey struct {
	// ID is the credential id, base64url.
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
	// Method is its amr value: hwk or swk.
	Method     string              `json:"method"`
	Credential webauthn.Credential `json:"credential"`
}

type passkeys struct {
	kv  storage.KV
	wa  *webauthn.WebAuthn
	now func() time.Time
}

// newPasskeys makes the relying party. WebAuthn does not take an IP
// address as a relying-party id: on such an issuer (http://127.0.0.1:…)
// passkeys are off, and the pages do not offer them.
func newPasskeys(kv storage.KV, issuer *url.URL, now func() time.Time) (*passkeys, error) {
	if net.ParseIP(issuer.Hostname()) != nil {
		return &passkeys{kv: kv, now: now}, nil
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          issuer.Hostname(),
		RPDisplayName: "Stepup",
		RPOrigins:     []string{issuer.Scheme + "://" + issuer.Host},
	})
	if err != nil {
		return nil, fmt.Errorf("passkeys: %w", err)
	}
	return &passkeys{kv: kv, wa: wa, now: now}, nil
}

func (p *passkeys) list(ctx context.Context, userID string) ([]passkey, error) {
	data, err := p.kv.Get(ctx, passkeysNS, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []passkey
	if err := json.Unmarshal(data, &keys); err != nil {
		return nil, fmt.Errorf("passkeys of %s: %w", userID, err)
	}
	return keys, nil
}

// change edits a person's passkeys atomically.
func (p *passkeys) change(ctx context.Context, userID string, fn func([]passkey) ([]passkey, error)) error {
	return p.kv.Update(ctx, passkeysNS, userID, 0, func(old []byte) ([]byte, error) {
		var keys []passkey
		if old != nil {
			if err := json.Unmarshal(old, &keys); err != nil {
				return nil, err
			}
		}
		keys, err := fn(keys)
		if err != nil || len(keys) == 0 {
			return nil, err
		}
		return json.Marshal(keys)
	})
}

// on reports whether this server can use passkeys at all.
func (p *passkeys) on() bool { return p.wa != nil }

// prefetch reads the person's passkeys with the request's next round
// trip, where this server can use them.
func (p *passkeys) prefetch(ctx context.Context, userID string) {
	if p.on() {
		prefetch(ctx, passkeysNS, userID)
	}
}

// has reports whether the person has a passkey this server can use.
func (p *passkeys) has(ctx context.Context, userID string) (bool, error) {
	if !p.on() {
		return false, nil
	}
	keys, err := p.list(ctx, userID)
	return len(keys) > 0, err
}

// keyUser is a person as go-webauthn sees them.
type keyUser struct {
	u    *User
	keys []passkey
}

func (k keyUser) WebAuthnID() []byte          { return []byte(k.u.ID) }
func (k keyUser) WebAuthnName() string        { return k.u.Username }
func (k keyUser) WebAuthnDisplayName() string { return cmp.Or(k.u.Name, k.u.Username) }
func (k keyUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(k.keys))
	for i, key := range k.keys {
		out[i] = key.Credential
	}
	return out
}

// ceremony is a registration or sign-in in progress.
type ceremony struct {
	Session webauthn.SessionData `json:"session"`
	// Browser is the browser id that began it.
	Browser string `json:"browser"`
	// User is the person, for a registration or a second factor.
	User string `json:"user,omitempty"`
	// Purpose: "register", "second" or "first".
	Purpose string `json:"purpose"`
	// Challenge is the pending authorization it belongs to.
	Challenge string `json:"challenge,omitempty"`
}

func (s *Server) saveCeremony(ctx context.Context, c ceremony) (string, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	id := randomString(24)
	return id, s.store.Put(ctx, ceremonyNS, id, data, ceremonyTTL)
}

// takeCeremony takes a ceremony once, for the browser that began it and
// its purpose; an answer from elsewhere leaves it to its own browser.
func (s *Server) takeCeremony(ctx context.Context, r *http.Request, id, purpose string) (*ceremony, error) {
	if len(id) != 32 {
		return nil, errCeremony
	}
	data, err := s.store.Get(ctx, ceremonyNS, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errCeremony
	}
	if err != nil {
		return nil, err
	}
	var c ceremony
	b, _ := r.Cookie(s.csrfCookieName())
	if err := json.Unmarshal(data, &c); err != nil || c.Purpose != purpose || b == nil || c.Browser != b.Value {
		return nil, errCeremony
	}
	// Taken once: of two answers at once, one wins.
	if _, err := s.store.Take(ctx, ceremonyNS, id); errors.Is(err, storage.ErrNotFound) {
		return nil, errCeremony
	} else if err != nil {
		return nil, err
	}
	return &c, nil
}

var errCeremony = errors.New("this passkey request has expired or was already used; try again")

// keyRequest reads a ceremony's JSON body, after its CSRF header.
func (s *Server) keyRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	if !s.passkeys.on() {
		writeError(w, http.StatusNotFound, "passkeys_unavailable",
			"Passkeys need this server to be reached by a name (an issuer like http://localhost:8080), not an IP address.")
		return false
	}
	if !s.csrfHeaderValid(r) {
		writeError(w, http.StatusForbidden, "invalid_request", "This page has expired or did not come from this site. Reload it and try again.")
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAssertion))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "The passkey request could not be read.")
		return false
	}
	return true
}

// csrfHeaderValid is the CSRF check of the script's requests, which send
// the form token in a header.
func (s *Server) csrfHeaderValid(r *http.Request) bool {
	c, err := r.Cookie(s.csrfCookieName())
	if err != nil || len(c.Value) != 43 {
		return false
	}
	return hmac.Equal([]byte(r.Header.Get("X-CSRF-Token")), []byte(s.csrfFor(c.Value)))
}

// keyMethod is the amr value a new credential earns. Without attestation
// the attachment is the browser's word: a roaming key it reports counts
// as hardware, as a security key is.
func keyMethod(c *webauthn.Credential) string {
	if c.Authenticator.Attachment == protocol.Platform && (c.AttestationFormat == "" || c.AttestationFormat == "none") {
		return tokens.MethodSoftwareKey
	}
	return tokens.MethodHardwareKey
}

// addKeyFactor records a key in the session: its method, verified by the
// person or not.
func addKeyFactor(ls *LoginSession, method string, verified bool, now time.Time) {
	via := ""
	if verified {
		via = viaUserVerified
	}
	ls.addFactor(method, via, now)
}

// viaUserVerified marks a key factor whose authenticator verified the
// person (RFC 8176 "user").
const viaUserVerified = "uv"

// Registration, from My profile → Security.

func (s *Server) passkeyRegisterOptions(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var body struct{}
	if !s.keyRequest(w, r, &body) {
		return
	}
	_, _, u, ok := s.apiAccount(w, r)
	if !ok {
		return
	}
	keys, err := s.passkeys.list(ctx, u.ID)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	if len(keys) >= maxPasskeys {
		writeError(w, http.StatusConflict, "too_many_passkeys", fmt.Sprintf("You have %d passkeys, the most an account may have; remove one first.", maxPasskeys))
		return
	}
	var exclude []protocol.CredentialDescriptor
	for _, c := range (keyUser{u, keys}).WebAuthnCredentials() {
		exclude = append(exclude, c.Descriptor())
	}
	creation, session, err := s.passkeys.wa.BeginRegistration(keyUser{u, keys},
		webauthn.WithExclusions(exclude),
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementPreferred))
	if err != nil {
		s.internalError(w, err)
		return
	}
	id, err := s.saveCeremony(ctx, ceremony{Session: *session, Browser: s.browserID(w, r), User: u.ID, Purpose: "register"})
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ceremony": id, "options": creation.Response})
}

func (s *Server) passkeyRegister(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var body struct {
		Ceremony   string          `json:"ceremony"`
		Name       string          `json:"name"`
		Credential json.RawMessage `json:"credential"`
	}
	if !s.keyRequest(w, r, &body) {
		return
	}
	ls, sid, u, ok := s.apiAccount(w, r)
	if !ok {
		return
	}
	name := strings.TrimSpace(body.Name)
	if name == "" {
		name = "Passkey"
	}
	if len(name) > maxKeyName {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("Give the passkey a name of at most %d characters.", maxKeyName))
		return
	}
	c, err := s.takeCeremony(ctx, r, body.Ceremony, "register")
	if err == nil && c.User != u.ID {
		err = errCeremony
	}
	if err != nil {
		s.keyRefused(w, err, u.ID, "registration")
		return
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body.Credential)
	if err != nil {
		s.keyRefused(w, err, u.ID, "registration")
		return
	}
	keys, err := s.passkeys.list(ctx, u.ID)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	cred, err := s.passkeys.wa.CreateCredential(keyUser{u, keys}, c.Session, parsed)
	if err != nil {
		s.keyRefused(w, err, u.ID, "registration")
		return
	}
	now := s.cfg.Now().UTC()
	key := passkey{ID: b64.EncodeToString(cred.ID), Name: name, Created: now, LastUsed: now, Method: keyMethod(cred), Credential: *cred}
	switch err := s.store.Create(ctx, passkeyOwnerNS, key.ID, []byte(u.ID), 0); {
	case errors.Is(err, storage.ErrAlreadyExists):
		s.log.Warn("passkey refused", "ceremony", "registration", "user", u.ID, "reason", "the credential id is registered already")
		writeError(w, http.StatusConflict, "passkey_refused", errKnownPasskey.Error()+".")
		return
	case err != nil:
		s.storeOrInternal(w, err)
		return
	}
	err = s.passkeys.change(ctx, u.ID, func(keys []passkey) ([]passkey, error) {
		if len(keys) >= maxPasskeys {
			return nil, errTooManyPasskeys
		}
		if slices.ContainsFunc(keys, func(k passkey) bool { return k.ID == key.ID }) {
			return nil, errKnownPasskey
		}
		return append(keys, key), nil
	})
	if err != nil {
		_ = s.store.Delete(ctx, passkeyOwnerNS, key.ID) // not registered after all
	}
	switch {
	case errors.Is(err, errTooManyPasskeys), errors.Is(err, errKnownPasskey):
		writeError(w, http.StatusConflict, "passkey_refused", err.Error())
		return
	case err != nil:
		s.storeOrInternal(w, err)
		return
	}
	// Making the key proved it, as setting up an authenticator proves a code.
	addKeyFactor(ls, key.Method, parsed.Response.AttestationObject.AuthData.Flags.HasUserVerified(), s.cfg.Now())
	if err := s.sessions.save(ctx, w, ls, sid); err != nil {
		s.storeOrInternal(w, err)
		return
	}
	s.log.Info("passkey registered", "user", u.ID, "method", key.Method)
	writeJSON(w, http.StatusCreated, map[string]any{"id": key.ID, "name": key.Name, "method": key.Method})
}

var (
	errTooManyPasskeys = fmt.Errorf("you have %d passkeys, the most an account may have; remove one first", maxPasskeys)
	errKnownPasskey    = errors.New("this passkey is registered already")
)

// keyRefused answers a ceremony that failed, and logs why.
func (s *Server) keyRefused(w http.ResponseWriter, err error, user, what string) {
	if isUnavailable(err) {
		s.unavailable(w, err)
		return
	}
	detail := err.Error()
	var pe *protocol.Error
	if errors.As(err, &pe) {
		detail = pe.Details + " " + pe.DevInfo
	}
	s.log.Warn("passkey refused", "ceremony", what, "user", user, "reason", detail)
	msg := "The passkey's answer was not accepted. Try again, or use another way to sign in."
	if errors.Is(err, errCeremony) {
		msg = "This passkey request has expired or was already used. Try again."
	}
	writeError(w, http.StatusBadRequest, "passkey_refused", msg)
}

// apiAccount is account() for the script's requests: it answers 401 in
// JSON rather than redirecting.
func (s *Server) apiAccount(w http.ResponseWriter, r *http.Request) (*LoginSession, string, *User, bool) {
	ctx := r.Context()
	ls, sid, err := s.sessions.get(ctx, r)
	if err != nil {
		s.storeOrInternal(w, err)
		return nil, "", nil, false
	}
	var u *User
	if ls != nil {
		if u, err = s.sessionUser(ctx, ls); err != nil {
			s.storeOrInternal(w, err)
			return nil, "", nil, false
		}
	}
	if u != nil {
		st, err := s.stepFor(ctx, step.Request{At: s.cfg.Now()}, ls, u)
		if err != nil {
			s.storeOrInternal(w, err)
			return nil, "", nil, false
		}
		if st.Kind == step.Done {
			return ls, sid, u, true
		}
	}
	writeError(w, http.StatusUnauthorized, "login_required", "Sign in again (reload the page), then add the passkey.")
	return nil, "", nil, false
}

func (s *Server) passkeyRemove(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !s.postedForm(w, r, "Cannot remove the passkey") {
		return
	}
	_, _, u, ok := s.account(w, r, "/account/security")
	if !ok {
		return
	}
	id := r.PostFormValue("id")
	// The epoch first: if what follows fails, the key is still there and
	// the logins it proved have ended, which is the safe half.
	keys, err := s.passkeys.list(ctx, u.ID)
	if err == nil && slices.ContainsFunc(keys, func(k passkey) bool { return k.ID == id }) {
		err = s.passkeys.newKeyEpoch(ctx, u.ID, s.cfg.Now())
		if err == nil {
			err = s.revokeCertificates(ctx, certificatesOfKeyRemoved(u.ID))
		}
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	var removed *passkey
	err = s.passkeys.change(ctx, u.ID, func(keys []passkey) ([]passkey, error) {
		i := slices.IndexFunc(keys, func(k passkey) bool { return k.ID == id })
		if i < 0 {
			return keys, nil
		}
		k := keys[i]
		removed = &k
		return slices.Delete(keys, i, i+1), nil
	})
	if err == nil && removed != nil {
		err = s.store.Delete(ctx, passkeyOwnerNS, removed.ID)
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	page := securityPage{Notice: "That passkey was removed already."}
	if removed != nil {
		page.Notice = "The passkey " + removed.Name + " is removed: it no longer signs you in."
		s.log.Info("passkey removed", "user", u.ID)
	}
	if s.securityState(w, r, u, &page) {
		s.render(w, s.pages.security, http.StatusOK, page)
	}
}

// Signing in.

type passkeyPage struct {
	Title, Why, Error, CSRF, Challenge string
}

// passkeyPage is the second-factor page of a person whose factor is a key.
func (s *Server) passkeyPage(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("challenge")
	p, ls, _, ok := s.midLogin(w, r, challenge)
	if !ok {
		return
	}
	allowFormTarget(w, p.Form.Get("redirect_uri"))
	s.render(w, s.pages.passkey, http.StatusOK, passkeyPage{Title: "Use your passkey", CSRF: s.csrfToken(w, r), Challenge: challenge,
		Why: s.stepWhy(r.Context(), p, &User{ID: ls.UserID})})
}

// passkeyLoginOptions begins a sign-in: mode "second" for the signed-in
// person's keys, "first" for any key that holds a passkey for this site.
func (s *Server) passkeyLoginOptions(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var body struct {
		Challenge string `json:"challenge"`
		Mode      string `json:"mode"`
	}
	if !s.keyRequest(w, r, &body) {
		return
	}
	if _, err := s.loadPending(ctx, body.Challenge); err != nil {
		if isUnavailable(err) {
			s.unavailable(w, err)
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_request", "This sign-in has expired. Start again from the application.")
		return
	}
	c := ceremony{Browser: s.browserID(w, r), Purpose: body.Mode, Challenge: body.Challenge}
	var assertion *protocol.CredentialAssertion
	var session *webauthn.SessionData
	var err error
	switch body.Mode {
	case "first":
		assertion, session, err = s.passkeys.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	case "second":
		ls, _, err := s.sessions.get(ctx, r)
		if err != nil {
			s.storeOrInternal(w, err)
			return
		}
		var u *User
		if ls != nil {
			if u, err = s.sessionUser(ctx, ls); err != nil {
				s.storeOrInternal(w, err)
				return
			}
		}
		if u == nil {
			writeError(w, http.StatusUnauthorized, "login_required", "Sign in with your password first.")
			return
		}
		keys, err := s.passkeys.list(ctx, u.ID)
		if err != nil {
			s.storeOrInternal(w, err)
			return
		}
		if len(keys) == 0 {
			writeError(w, http.StatusBadRequest, "no_passkey", "You have no passkey yet: add one on My profile → Security.")
			return
		}
		c.User = u.ID
		assertion, session, err = s.passkeys.wa.BeginLogin(keyUser{u, keys}, webauthn.WithUserVerification(protocol.VerificationPreferred))
	default:
		writeError(w, http.StatusBadRequest, "invalid_request", `mode must be "first" or "second".`)
		return
	}
	if err != nil {
		s.internalError(w, err)
		return
	}
	c.Session = *session
	id, err := s.saveCeremony(ctx, c)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ceremony": id, "options": assertion.Response})
}

// passkeyLogin checks an assertion, records the key in the session and
// says where the browser goes next.
func (s *Server) passkeyLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var body struct {
		Ceremony   string          `json:"ceremony"`
		Mode       string          `json:"mode"`
		Credential json.RawMessage `json:"credential"`
	}
	if !s.keyRequest(w, r, &body) {
		return
	}
	c, err := s.takeCeremony(ctx, r, body.Ceremony, body.Mode)
	if err != nil {
		s.keyRefused(w, err, "", "sign-in")
		return
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body.Credential)
	if err != nil {
		s.keyRefused(w, err, c.User, "sign-in")
		return
	}
	var u *User
	var keys []passkey
	var cred *webauthn.Credential
	if c.Purpose == "second" {
		if u, err = s.user(ctx, c.User); err == nil && u != nil {
			if keys, err = s.passkeys.list(ctx, u.ID); err == nil {
				cred, err = s.passkeys.wa.ValidateLogin(keyUser{u, keys}, c.Session, parsed)
			}
		} else if err == nil {
			err = errCeremony
		}
	} else {
		var found webauthn.User
		found, cred, err = s.passkeys.wa.ValidatePasskeyLogin(func(_, handle []byte) (webauthn.User, error) {
			person, err := s.user(ctx, string(handle))
			if err != nil || person == nil {
				return nil, errors.Join(errors.New("no such person"), err)
			}
			ks, err := s.passkeys.list(ctx, person.ID)
			if err != nil {
				return nil, err
			}
			u, keys = person, ks
			return keyUser{person, ks}, nil
		}, c.Session, parsed)
		if err == nil && found == nil {
			err = errCeremony
		}
	}
	who := c.User
	if u != nil {
		who = u.ID
	}
	if err != nil {
		s.keyRefused(w, err, who, "sign-in")
		return
	}
	if cred.Authenticator.CloneWarning {
		s.log.Warn("passkey refused", "ceremony", "sign-in", "user", u.ID, "reason", "the signature counter went back: the key may have been copied")
		writeError(w, http.StatusBadRequest, "passkey_refused",
			"This passkey's signature counter went back, which a copied key would do. It was not accepted: sign in another way, and remove it on My profile → Security.")
		return
	}
	i := slices.IndexFunc(keys, func(k passkey) bool { return bytes.Equal(k.Credential.ID, cred.ID) })
	if i < 0 {
		s.keyRefused(w, errCeremony, u.ID, "sign-in")
		return
	}
	ls, oldID, err := s.sessions.get(ctx, r)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	if ls == nil || ls.UserID != u.ID {
		if c.Purpose == "second" {
			s.keyRefused(w, errCeremony, u.ID, "sign-in")
			return
		}
		ls = &LoginSession{UserID: u.ID, CreatedAt: s.cfg.Now()}
	}
	method := keys[i].Method
	now := s.cfg.Now().UTC()
	if err := s.passkeys.change(ctx, u.ID, func(keys []passkey) ([]passkey, error) {
		for j := range keys {
			if bytes.Equal(keys[j].Credential.ID, cred.ID) {
				if cred.Authenticator.SignCount != 0 && cred.Authenticator.SignCount <= keys[j].Credential.Authenticator.SignCount {
					return nil, errReplayedCounter
				}
				keys[j].Credential, keys[j].LastUsed = *cred, now
			}
		}
		return keys, nil
	}); err != nil {
		if errors.Is(err, errReplayedCounter) {
			s.log.Warn("passkey refused", "ceremony", "sign-in", "user", u.ID, "reason", "a concurrent sign-in used the same counter")
			writeError(w, http.StatusBadRequest, "passkey_refused", "This passkey's answer was used already. Try again.")
			return
		}
		s.storeOrInternal(w, err)
		return
	}
	addKeyFactor(ls, method, parsed.Response.AuthenticatorData.Flags.HasUserVerified(), s.cfg.Now())
	if err := s.sessions.save(ctx, w, ls, oldID); err != nil {
		s.storeOrInternal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"next": pagePasskey + "/continue?challenge=" + url.QueryEscape(c.Challenge)})
}

var errReplayedCounter = errors.New("replayed counter")

// passkeyContinue goes on with the sign-in a key completed.
func (s *Server) passkeyContinue(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("challenge")
	p, ls, _, ok := s.midLogin(w, r, challenge)
	if !ok {
		return
	}
	s.continueLogin(w, r, challenge, p, ls)
}

// passkeyViews are a person's keys as the security page lists them.
type passkeyView struct {
	ID, Name, Method  string
	Created, LastUsed when
}

func passkeyViews(keys []passkey) []passkeyView {
	out := make([]passkeyView, len(keys))
	for i, k := range keys {
		out[i] = passkeyView{ID: k.ID, Name: k.Name, Method: k.Method, Created: whenOf(k.Created), LastUsed: whenOf(k.LastUsed)}
	}
	return out
}

// hasSecondFactor reports whether the person has MFA: an authenticator
// app, or a passkey.
func (s *Server) hasSecondFactor(ctx context.Context, userID string) (bool, error) {
	if on, err := s.mfa.enabled(ctx, userID); err != nil || on {
		return on, err
	}
	return s.passkeys.has(ctx, userID)
}

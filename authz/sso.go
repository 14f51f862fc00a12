package authz

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/ory/fosite"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// SSOProvider is an upstream OpenID Connect provider people can log in
// through; a login through it adds the factor sso:<ID>.
type SSOProvider struct {
	ID, Issuer, ClientID, ClientSecret string
	// Name is what pages call the provider; the id when empty.
	Name   string
	Scopes []string // default openid email profile
	// TrustUpstreamMFA counts the upstream's own amr "mfa" as ours.
	TrustUpstreamMFA bool
	// Subjects maps upstream subjects to local user ids; without an entry,
	// an identity is linked by the email address the upstream verified.
	Subjects map[string]string
	// MaxSessionAge bounds how long an SSO login keeps refreshing tokens.
	MaxSessionAge time.Duration
	// AllowedDomains, when set, lets a person with no account here, whose
	// email the upstream verified and is at one of these domains, get one
	// at their first login (just-in-time provisioning). Not with Subjects.
	AllowedDomains []string
	// JoinOrg, when set, is an organization such new accounts join, with
	// JoinRole (member by default).
	JoinOrg, JoinRole string
}

// upstreams holds the providers and their discovery, done on first use so
// that a provider that is down does not stop the server from starting.
type upstreams struct {
	byID     map[string]*SSOProvider
	callback func(id string) string

	mu        sync.Mutex
	providers map[string]*oidc.Provider
}

// displayName is what pages call the provider id; "" for none.
func (u *upstreams) displayName(id string) string {
	if p, ok := u.byID[id]; ok && p.Name != "" {
		return p.Name
	}
	return id
}

func (u *upstreams) ids() []string {
	var out []string
	for id := range u.byID {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (u *upstreams) discover(ctx context.Context, p *SSOProvider) (*oidc.Provider, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if op, ok := u.providers[p.ID]; ok {
		return op, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	op, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering SSO provider %s at %s: %w", p.ID, p.Issuer, err)
	}
	u.providers[p.ID] = op
	return op, nil
}

func (u *upstreams) oauth(op *oidc.Provider, p *SSOProvider) *oauth2.Config {
	scopes := p.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	return &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, Endpoint: op.Endpoint(),
		RedirectURL: u.callback(p.ID), Scopes: scopes}
}

// ssoState is what a trip to the upstream carries, kept server-side under
// the state value and taken once.
type ssoState struct {
	// Browser is the starting browser's cookie: the answer must come back
	// to the same browser, or someone could start a login and have another
	// person finish it.
	Browser   string `json:"browser"`
	Provider  string `json:"provider"`
	Challenge string `json:"challenge"`
	Nonce     string `json:"nonce"`
	Verifier  string `json:"verifier"`
}

const (
	ssoStateNS  = "sso-state"
	ssoStateTTL = 10 * time.Minute
)

// ssoStart is GET /sso/{provider}/start?challenge=…: off to the upstream,
// with state, nonce and PKCE.
func (s *Server) ssoStart(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p, ok := s.sso.byID[r.PathValue("provider")]
	if !ok {
		s.showError(w, http.StatusNotFound, "Unknown sign-in provider", "This server has no single sign-on provider by that name.")
		return
	}
	challenge := r.URL.Query().Get("challenge")
	if _, ok := s.pending(w, r, challenge); !ok {
		return
	}
	op, err := s.sso.discover(ctx, p)
	if err != nil {
		s.log.Error("sso", "err", err)
		s.showError(w, http.StatusBadGateway, "Sign-in provider unavailable",
			"The sign-in provider "+p.ID+" cannot be reached right now. Try again in a minute, or sign in another way.")
		return
	}
	st := ssoState{Browser: s.browserID(w, r), Provider: p.ID, Challenge: challenge, Nonce: randomString(16), Verifier: oauth2.GenerateVerifier()}
	data, _ := json.Marshal(st)
	state := randomString(24)
	if err := s.store.Put(ctx, ssoStateNS, state, data, ssoStateTTL); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	http.Redirect(w, r, s.sso.oauth(op, p).AuthCodeURL(state, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier)), http.StatusSeeOther)
}

// ssoCallback is GET /sso/{provider}/callback: the upstream's answer. The
// state is taken once, so a replayed callback finds nothing.
func (s *Server) ssoCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	p, ok := s.sso.byID[r.PathValue("provider")]
	if !ok {
		s.showError(w, http.StatusNotFound, "Unknown sign-in provider", "This server has no single sign-on provider by that name.")
		return
	}
	data, err := s.store.Take(ctx, ssoStateNS, q.Get("state"))
	if errors.Is(err, storage.ErrNotFound) || q.Get("state") == "" {
		s.showError(w, http.StatusBadRequest, "This sign-in has expired",
			"The answer from the sign-in provider does not match a sign-in in progress (it may have been used already). Start again from the application.")
		return
	}
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	var st ssoState
	if json.Unmarshal(data, &st) != nil || st.Provider != p.ID {
		s.showError(w, http.StatusBadRequest, "Cannot sign in", "The answer came back to the wrong sign-in provider.")
		return
	}
	if c, err := r.Cookie(s.csrfCookieName()); err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(st.Browser)) != 1 {
		s.showError(w, http.StatusBadRequest, "Cannot sign in",
			"This sign-in was started in another browser. Start again from the application in this one.")
		return
	}
	op, err := s.sso.discover(ctx, p)
	if err != nil {
		if e := q.Get("error"); e != "" {
			s.showError(w, http.StatusUnauthorized, "Sign-in was not completed",
				p.ID+" did not sign you in ("+truncate(e, 64)+": "+truncate(q.Get("error_description"), 200)+").")
			return
		}
		s.showError(w, http.StatusBadGateway, "Sign-in provider unavailable", "The sign-in provider "+p.ID+" cannot be reached right now.")
		return
	}
	// RFC 9207: an answer naming another issuer, or lacking the issuer a
	// provider promises to name, may be a mix-up attack.
	var meta struct {
		ISS bool `json:"authorization_response_iss_parameter_supported"`
	}
	_ = op.Claims(&meta)
	switch {
	case q.Has("iss") && q.Get("iss") != p.Issuer:
		s.showError(w, http.StatusBadRequest, "Cannot sign in", "The answer names a different sign-in provider than "+p.ID+".")
		return
	case !q.Has("iss") && meta.ISS:
		s.showError(w, http.StatusBadRequest, "Cannot sign in",
			"The answer does not name its sign-in provider, which "+p.ID+" always does; start again from the application.")
		return
	}
	if e := q.Get("error"); e != "" {
		s.showError(w, http.StatusUnauthorized, "Sign-in was not completed",
			p.ID+" did not sign you in ("+truncate(e, 64)+": "+truncate(q.Get("error_description"), 200)+").")
		return
	}
	u, upstreamMFA, err := s.ssoIdentity(ctx, op, p, q.Get("code"), st)
	if _, refused := err.(errSSO); err != nil && !refused {
		s.authorizeError(w, nil, err)
		return
	}
	if err != nil {
		s.log.Info("sso login refused", "provider", p.ID, "err", err)
		s.showError(w, http.StatusUnauthorized, "Cannot sign in", err.Error())
		return
	}
	ls, oldID, err := s.sessions.get(ctx, r)
	if err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if ls == nil || ls.UserID != u.ID {
		ls = &LoginSession{UserID: u.ID, CreatedAt: s.cfg.Now()}
	}
	via := ""
	if upstreamMFA {
		via = "mfa"
	}
	ls.addFactor(tokens.SSOMethod(p.ID), via, s.cfg.Now())
	if err := s.linkSSO(ctx, u.ID, p.ID); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	if err := s.sessions.save(ctx, w, ls, oldID); err != nil {
		s.authorizeError(w, nil, err)
		return
	}
	pa, ok := s.pending(w, r, st.Challenge)
	if !ok {
		return
	}
	s.continueLogin(w, r, st.Challenge, pa, ls)
}

// errSSO is a refusal to show the person as it is.
type errSSO string

func (e errSSO) Error() string { return string(e) }

// ssoIdentity redeems the upstream's code, verifies its ID token (issuer,
// audience, expiry, signature, nonce) and finds the local person.
func (s *Server) ssoIdentity(ctx context.Context, op *oidc.Provider, p *SSOProvider, code string, st ssoState) (*User, bool, error) {
	tok, err := s.sso.oauth(op, p).Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return nil, false, errSSO("The sign-in provider " + p.ID + " did not accept the sign-in (" + truncate(err.Error(), 200) + ").")
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := op.Verifier(&oidc.Config{ClientID: p.ClientID, Now: s.cfg.Now}).Verify(ctx, raw)
	if err != nil {
		return nil, false, errSSO("The sign-in provider " + p.ID + " sent an identity that does not check out.")
	}
	if idt.Nonce != st.Nonce {
		return nil, false, errSSO("The sign-in provider's answer does not belong to this sign-in.")
	}
	var c struct {
		Email    string   `json:"email"`
		Verified bool     `json:"email_verified"`
		AMR      []string `json:"amr"`
	}
	if err := idt.Claims(&c); err != nil {
		return nil, false, errSSO("The sign-in provider sent an identity that cannot be read.")
	}
	upstreamMFA := p.TrustUpstreamMFA && slices.Contains(c.AMR, tokens.MethodMFA)
	// A provider with a subjects map is one whose emails are not trusted to
	// link accounts: the map is the only way in, or anyone able to claim a
	// verified address there could become its owner here.
	if len(p.Subjects) > 0 {
		id, ok := p.Subjects[idt.Subject]
		if !ok {
			return nil, false, errSSO("Your account at " + p.ID + " is not linked to an account here. Ask an administrator to link it (subject " + truncate(idt.Subject, 64) + ").")
		}
		u, err := s.user(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if u == nil {
			return nil, false, errSSO("Your account at " + p.ID + " is linked to an account that no longer exists here. Ask an administrator.")
		}
		return u, upstreamMFA, nil
	}
	if c.Email == "" || !c.Verified {
		return nil, false, errSSO("The sign-in provider " + p.ID + " did not vouch for an email address, so it cannot be matched to an account here.")
	}
	u, err := s.userByEmail(ctx, c.Email)
	if err != nil {
		return nil, false, err
	}
	if u == nil && p.provisions(c.Email) {
		if u, err = s.provision(ctx, p, c.Email); err != nil {
			return nil, false, err
		}
	}
	if u == nil {
		return nil, false, errSSO("There is no account here for " + c.Email + ". Ask an administrator to add you.")
	}
	return u, upstreamMFA, nil
}

const ssoLinksNS = "sso-links"

// linkSSO records that the person has logged in through provider, for the
// members list and userinfo.
func (s *Server) linkSSO(ctx context.Context, userID, provider string) error {
	return s.store.Update(ctx, ssoLinksNS, userID, 0, func(old []byte) ([]byte, error) {
		var ids []string
		if old != nil {
			if err := json.Unmarshal(old, &ids); err != nil {
				return nil, err
			}
		}
		if slices.Contains(ids, provider) {
			return old, nil
		}
		ids = append(ids, provider)
		slices.Sort(ids)
		return json.Marshal(ids)
	})
}

// linkedProviders are the providers the person has logged in through.
func (s *Server) linkedProviders(ctx context.Context, userID string) ([]string, error) {
	data, err := s.store.Get(ctx, ssoLinksNS, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	return ids, json.Unmarshal(data, &ids)
}

func ssoLoginPath(provider string) string { return "/sso/" + provider + "/start" }

// refreshCheck refuses to refresh a grant whose login no longer holds: an
// SSO login older than its provider allows (the person must go through the
// provider again), or an otp proved before the person turned MFA off or
// reset it.
type refreshCheck struct {
	sso *upstreams
	mfa *secondFactors
	srv *Server // for the person, who may have been disabled
	now func() time.Time
}

func (c refreshCheck) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	return r.GetGrantTypes().ExactOne("refresh_token")
}

func (c refreshCheck) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

// HandleTokenEndpointRequest runs after the refresh handler has loaded the
// grant's session.
func (c refreshCheck) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !c.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	sess, ok := r.GetSession().(*Session)
	if !ok {
		return nil
	}
	if sess.Grant != "client_credentials" {
		u, err := c.srv.user(ctx, sess.Subject)
		if err != nil {
			return err
		}
		if u == nil {
			return fosite.ErrInvalidGrant.WithHint("The account was disabled or removed.")
		}
		if u.LoggedInBefore(sess.AuthTime()) {
			return fosite.ErrInvalidGrant.WithHint("The password was changed after this login: log in again.")
		}
	}
	for id, at := range sess.SSO {
		p, ok := c.sso.byID[id]
		if !ok || (p.MaxSessionAge > 0 && c.now().Sub(at) > p.MaxSessionAge) {
			return fosite.ErrInvalidGrant.WithHintf("SSO session has expired: sign in through %s again.", id)
		}
	}
	if slices.Contains(sess.AMR(), tokens.MethodOTP) {
		valid, err := c.mfa.otpStillValid(ctx, sess.Subject, sess.otpAt())
		if err != nil {
			return err
		}
		if !valid {
			return fosite.ErrInvalidGrant.WithHint("Your second factor was turned off or reset after this login: log in again.")
		}
	}
	if provedKey(sess.AMR()) {
		valid, err := c.srv.passkeys.keyStillValid(ctx, sess.Subject, sess.keyAt())
		if err != nil {
			return err
		}
		if !valid {
			return fosite.ErrInvalidGrant.WithHint("A passkey was removed after this login: log in again.")
		}
	}
	return nil
}

func (c refreshCheck) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, _ fosite.AccessResponder) error {
	if !c.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	return nil
}

// provisions says whether the provider may make an account for this
// verified address.
func (p *SSOProvider) provisions(addr string) bool {
	_, domain, ok := strings.Cut(strings.ToLower(addr), "@")
	return ok && len(p.Subjects) == 0 && slices.Contains(p.AllowedDomains, domain)
}

// provision makes an account for a person the provider vouches for: the
// verified address, no password (they sign in through the provider), and a
// username from the address's local part, numbered when taken. It joins
// JoinOrg if the provider names one.
func (s *Server) provision(ctx context.Context, p *SSOProvider, addr string) (*User, error) {
	local, _, _ := strings.Cut(strings.ToLower(addr), "@")
	base := strings.Trim(usernameChars.ReplaceAllString(local, "-"), "-._")
	if len(base) < 2 {
		base = "user"
	}
	base = truncate(base, 30)
	base = strings.TrimSuffix(base, "…")
	u := User{ID: "u_" + randomString(12), Email: addr, EmailVerified: true}
	for i := 0; ; i++ {
		if i == 20 {
			return nil, errors.New("no free username for a provisioned account")
		}
		u.Username = base
		if i > 0 {
			u.Username = fmt.Sprintf("%s%d", base, i+1)
		}
		err := s.people.CreateUser(ctx, u)
		switch {
		case errors.Is(err, directory.ErrUsernameTaken):
			continue
		case errors.Is(err, directory.ErrEmailTaken):
			return s.userByEmail(ctx, addr) // made by a concurrent login
		case err != nil:
			return nil, err
		}
		break
	}
	s.log.Info("sso account provisioned", "provider", p.ID, "user", u.ID, "username", u.Username)
	if p.JoinOrg != "" {
		role := cmp.Or(p.JoinRole, directory.RoleMember)
		if err := s.people.AddMember(ctx, p.JoinOrg, u.ID, role); err != nil && !errors.Is(err, directory.ErrMember) {
			s.log.Error("sso provisioning: joining the organization", "provider", p.ID, "org", p.JoinOrg, "err", err)
		} else if err == nil {
			s.auditOrLog(ctx, p.JoinOrg, u.ID, "member.provision", map[string]any{"provider": p.ID, "role": role})
		}
	}
	return &u, nil
}

var usernameChars = regexp.MustCompile(`[^a-z0-9._-]+`)

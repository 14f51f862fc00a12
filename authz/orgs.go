package authz

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// orgSecurity is what an organization demands of its members'
// authentication. The config seeds it; owners and admins change it at run
// time, and the store's copy wins from then on.
type orgSecurity struct {
	MFARequired bool `json:"mfa_required"`
	// PhishingResistant requires MFA with a passkey or security key (phr).
	PhishingResistant bool   `json:"phishing_resistant,omitempty"`
	SSOProvider       string `json:"sso_provider"`
}

func (sec orgSecurity) requirements() tokens.Requirements {
	r := tokens.Requirements{AMR: []string{}}
	if sec.MFARequired {
		r.AMR = append(r.AMR, tokens.MethodMFA)
	}
	if sec.PhishingResistant {
		r.AMR = append(r.AMR, tokens.MethodPhishingResistant)
	}
	if sec.SSOProvider != "" {
		r.AMR = append(r.AMR, tokens.SSOMethod(sec.SSOProvider))
	}
	return r
}

const (
	orgSecurityNS = "org-security"
	orgAuditNS    = "org-audit"
	// auditKeep bounds an organization's audit log to its newest events.
	auditKeep = 1000
)

// auditEvent is one line of an organization's audit log.
type auditEvent struct {
	At     time.Time      `json:"at"`
	Actor  string         `json:"actor"`
	Action string         `json:"action"`
	Detail map[string]any `json:"detail"`
}

func (s *Server) audit(ctx context.Context, orgID string, e auditEvent) error {
	return s.store.Update(ctx, orgAuditNS, orgID, 0, func(old []byte) ([]byte, error) {
		var events []auditEvent
		if old != nil {
			if err := json.Unmarshal(old, &events); err != nil {
				return nil, err
			}
		}
		events = append(events, e)
		if len(events) > auditKeep {
			events = events[len(events)-auditKeep:]
		}
		return json.Marshal(events)
	})
}

// orgRequest is an authenticated person acting in an organization whose
// policy their token satisfies.
type orgRequest struct {
	user *User
	org  *directory.Org
	role string
	sec  orgSecurity
}

// orgCaller admits a request to /api/orgs/{org}/…: a person's valid token
// (401), membership (404, so a non-member cannot tell the organization
// exists), then the organization's policy (401 with the step-up challenge).
// It answers a refusal itself.
func (s *Server) orgCaller(w http.ResponseWriter, r *http.Request, use tokenUse) (*orgRequest, bool) {
	c, ok := s.authenticate(w, r, use)
	if !ok {
		return nil, false
	}
	u := c.user
	o, role, err := s.orgOf(r.Context(), r.PathValue("org"), u.ID)
	if err != nil {
		s.storeOrInternal(w, err)
		return nil, false
	}
	if o == nil {
		writeError(w, http.StatusNotFound, "not_found", "There is no organization with that id that you can see.")
		return nil, false
	}
	sec := securityOf(o)
	if missing := tokens.Missing(sec.requirements(), c.claims.AMR, time.Unix(c.claims.AuthTime, 0), s.cfg.Now()); !missing.Satisfied() {
		w.Header().Set("WWW-Authenticate", missing.WWWAuthenticate())
		writeJSON(w, http.StatusUnauthorized, missing.Body())
		return nil, false
	}
	return &orgRequest{user: u, org: o, role: role, sec: sec}, true
}

func (q *orgRequest) admin(w http.ResponseWriter) bool {
	if q.role == "owner" || q.role == "admin" {
		return true
	}
	writeError(w, http.StatusForbidden, "access_denied", "Only the organization's owners and admins can do this; your role is "+q.role+".")
	return false
}

func (q *orgRequest) view() map[string]any {
	o := *q.org
	o.MFARequired, o.PhishingResistant, o.SSOProvider = q.sec.MFARequired, q.sec.PhishingResistant, q.sec.SSOProvider
	return orgView(&o)
}

// getOrg is GET /api/orgs/{org}.
func (s *Server) getOrg(w http.ResponseWriter, r *http.Request) {
	if q, ok := s.orgCaller(w, r, usePerson); ok {
		writeJSON(w, http.StatusOK, q.view())
	}
}

// patchOrgSecurity is PATCH /api/orgs/{org}/security.
func (s *Server) patchOrgSecurity(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, ok := s.orgCaller(w, r, useSecurity)
	if !ok || !q.admin(w) {
		return
	}
	var body securityChange
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.empty() {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send a JSON object with "mfa_required" (true or false), "phishing_resistant" (true or false), "sso_provider" (a provider id, or "" for none), or several.`)
		return
	}
	switch err := s.updateSecurity(ctx, q, body); {
	case errors.Is(err, errUnknownProvider):
		writeError(w, http.StatusBadRequest, "invalid_request", "There is no SSO provider "+truncate(*body.SSOProvider, 64)+" in this server's configuration.")
	case errors.Is(err, errNeedOwnMFA):
		writeError(w, http.StatusConflict, "mfa_not_enabled", errNeedOwnMFA.Error()+" at "+s.cfg.Issuer+"/account/security; then you can require it for the organization.")
	case errors.Is(err, errNeedOwnPasskey):
		writeError(w, http.StatusConflict, "passkey_not_registered", errNeedOwnPasskey.Error()+" at "+s.cfg.Issuer+"/account/security; then you can require phishing-resistant MFA for the organization.")
	case err != nil:
		s.storeOrInternal(w, err)
	default:
		writeJSON(w, http.StatusOK, q.view())
	}
}

var (
	errUnknownProvider = errors.New("no such SSO provider")
	errNeedOwnMFA      = errors.New("Turn on multi-factor authentication for your own account first")
	errNeedOwnPasskey  = errors.New("Add a passkey or security key to your own account first")
)

// securityChange is a change of an organization's settings; nil fields
// stay as they are.
type securityChange struct {
	MFARequired       *bool   `json:"mfa_required"`
	PhishingResistant *bool   `json:"phishing_resistant"`
	SSOProvider       *string `json:"sso_provider"`
}

func (c securityChange) empty() bool {
	return c.MFARequired == nil && c.PhishingResistant == nil && c.SSOProvider == nil
}

// updateSecurity changes an organization's settings for an owner or
// admin, records it in the audit log, and updates q.sec. One may require
// a factor only after having it: MFA (an authenticator app or a passkey),
// or a passkey for phishing-resistant MFA.
func (s *Server) updateSecurity(ctx context.Context, q *orgRequest, c securityChange) error {
	if _, known := s.sso.byID[deref(c.SSOProvider)]; c.SSOProvider != nil && *c.SSOProvider != "" && !known {
		return errUnknownProvider
	}
	if c.MFARequired != nil && *c.MFARequired && !q.sec.MFARequired {
		if has, err := s.hasSecondFactor(ctx, q.user.ID); err != nil || !has {
			return cmp.Or(err, errNeedOwnMFA)
		}
	}
	if c.PhishingResistant != nil && *c.PhishingResistant && !q.sec.PhishingResistant {
		if has, err := s.passkeys.has(ctx, q.user.ID); err != nil || !has {
			return cmp.Or(err, errNeedOwnPasskey)
		}
	}
	sec := q.sec
	if c.MFARequired != nil {
		sec.MFARequired = *c.MFARequired
	}
	if c.PhishingResistant != nil {
		sec.PhishingResistant = *c.PhishingResistant
	}
	if c.SSOProvider != nil {
		sec.SSOProvider = *c.SSOProvider
	}
	if _, err := s.people.UpdateOrg(ctx, q.org.ID, func(o *directory.Org) error {
		o.MFARequired, o.PhishingResistant, o.SSOProvider = sec.MFARequired, sec.PhishingResistant, sec.SSOProvider
		return nil
	}); err != nil {
		return err
	}
	if err := s.audit(ctx, q.org.ID, auditEvent{At: s.cfg.Now().UTC(), Actor: q.user.ID, Action: "security.update",
		Detail: map[string]any{"from": q.sec, "to": sec}}); err != nil {
		s.log.Error("audit", "org", q.org.ID, "err", err)
	}
	q.sec = sec
	return nil
}

// memberView is a member as owners and admins see them.
type memberView struct {
	ID             string   `json:"id"`
	Username       string   `json:"username"`
	Email          string   `json:"email"`
	Role           string   `json:"role"`
	MFAEnabled     bool     `json:"mfa_enabled"`
	SSOProviders   []string `json:"sso_providers"`
	LastRemindedAt *string  `json:"last_reminded_at"`
}

func (s *Server) memberList(ctx context.Context, q *orgRequest) ([]memberView, error) {
	members, err := s.allMembers(ctx, q.org.ID)
	if err != nil {
		return nil, err
	}
	return s.memberViews(ctx, q.org.ID, members)
}

// memberViews adds each member's MFA state, last reminder and SSO links,
// in three batched reads whatever the number of members.
func (s *Server) memberViews(ctx context.Context, org string, members []directory.Member) ([]memberView, error) {
	ids, reminderKeys := make([]string, len(members)), make([]string, len(members))
	for i, m := range members {
		ids[i], reminderKeys[i] = m.User.ID, org+"/"+m.User.ID
	}
	enrolled, err := s.store.GetMany(ctx, mfaNS, ids...)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.GetMany(ctx, passkeysNS, ids...)
	if err != nil {
		return nil, err
	}
	reminded, err := s.store.GetMany(ctx, remindedNS, reminderKeys...)
	if err != nil {
		return nil, err
	}
	links, err := s.store.GetMany(ctx, ssoLinksNS, ids...)
	if err != nil {
		return nil, err
	}
	out := make([]memberView, 0, len(members))
	for i, m := range members {
		v := memberView{ID: m.User.ID, Username: m.User.Username, Email: m.User.Email, Role: m.Role,
			MFAEnabled: enrolled[i] != nil || keys[i] != nil && s.passkeys.on(), SSOProviders: []string{}}
		if reminded[i] != nil {
			at := string(reminded[i])
			v.LastRemindedAt = &at
		}
		if links[i] != nil {
			if err := json.Unmarshal(links[i], &v.SSOProviders); err != nil {
				return nil, fmt.Errorf("decoding the SSO links of %s: %w", m.User.ID, err)
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// members is GET /api/orgs/{org}/members[?mfa_enabled=false][&after=ID&limit=N].
// With after or limit, it answers one page and, when there may be more,
// "next", the after of the next page.
func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, ok := s.orgCaller(w, r, useManage)
	if !ok || !q.admin(w) {
		return
	}
	filter := r.URL.Query().Get("mfa_enabled")
	if filter != "" && filter != "true" && filter != "false" {
		writeError(w, http.StatusBadRequest, "invalid_request", "mfa_enabled must be true or false.")
		return
	}
	after, limit, paged, ok := pageParams(w, r)
	if !ok {
		return
	}
	var (
		list []memberView
		next string
		err  error
	)
	if paged {
		var page []directory.Member
		if page, err = s.people.Members(ctx, q.org.ID, after, limit); err == nil {
			if len(page) == limit {
				next = page[len(page)-1].User.ID
			}
			list, err = s.memberViews(ctx, q.org.ID, page)
		}
	} else {
		list, err = s.memberList(ctx, q)
	}
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	out := []memberView{}
	for _, m := range list {
		if filter == "" || (filter == "true") == m.MFAEnabled {
			out = append(out, m)
		}
	}
	answer := map[string]any{"members": out}
	if next != "" {
		answer["next"] = next
	}
	writeJSON(w, http.StatusOK, answer)
}

// auditLog is GET /api/orgs/{org}/audit.
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request) {
	q, ok := s.orgCaller(w, r, useManage)
	if !ok || !q.admin(w) {
		return
	}
	events := []auditEvent{}
	data, err := s.store.Get(r.Context(), orgAuditNS, q.org.ID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		s.storeOrInternal(w, err)
		return
	default:
		if err := json.Unmarshal(data, &events); err != nil {
			s.internalError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": events})
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

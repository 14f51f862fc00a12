package authz

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/tokens"
)

// The server's own protected endpoints (/api/*, userinfo, /ssh) admit a
// request through authenticate alone. It checks the bearer token once and
// hands the handler its verified claims, so that no handler decodes a token
// again or forgets a check.

// tokenUse is what an endpoint demands of a token beyond being one of our
// unrevoked, unexpired access tokens meant for Stepup's API (aud).
type tokenUse struct {
	// person: issued for a person's login, not to a client for itself.
	person bool
	// firstParty: issued to one of the API clients (Config.APIClients),
	// never to a third-party relying party.
	firstParty bool
	// manage: a management call; the client must be one of
	// Config.ManageClients, and the token carry Config.ManageScope if set.
	manage bool
	// scopes must all have been granted.
	scopes []string
	// byLogin: the token must come from a login, not from an API token,
	// which is a long-lived credential for automation.
	byLogin bool
}

var (
	usePerson = tokenUse{person: true, firstParty: true}
	useManage = tokenUse{person: true, firstParty: true, manage: true}
	// useSecurity changes what an organization demands of everyone.
	useSecurity = tokenUse{person: true, firstParty: true, manage: true, byLogin: true}
	useUserinfo = tokenUse{person: true, scopes: []string{"openid"}}
)

// caller is who a request acts as: the verified claims of its token and,
// for a person's token, the person.
type caller struct {
	claims *tokens.AccessClaims
	user   *User
	// signature names the token's record in its grant family.
	signature string
}

// refusal is why a token was not admitted, answered once by refuse.
type refusal struct {
	status      int
	code        string
	description string
	// scope is the scope to name in an insufficient_scope challenge.
	scope string
}

func (e *refusal) Error() string { return e.code + ": " + e.description }

func invalidToken(description string) *refusal {
	return &refusal{status: http.StatusUnauthorized, code: "invalid_token", description: description}
}

func accessDenied(description string) *refusal {
	return &refusal{status: http.StatusForbidden, code: "access_denied", description: description}
}

// authenticate admits a request whose bearer token is fit for use, or
// answers why not (401, 403, or 503 when the store cannot tell) and
// returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, use tokenUse) (*caller, bool) {
	c, err := s.verifyBearer(r.Context(), fosite.AccessTokenFromRequest(r), use)
	if err == nil {
		return c, true
	}
	var ref *refusal
	if !errors.As(err, &ref) {
		s.storeOrInternal(w, err)
		return nil, false
	}
	switch {
	case ref.code == "invalid_request":
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.cfg.Issuer+`"`)
	case ref.scope != "":
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+ref.scope+`"`)
	case ref.status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+headerSafe(ref.description)+`"`)
	}
	writeError(w, ref.status, ref.code, ref.description)
	return nil, false
}

// headerSafe keeps what RFC 6750 allows in error_description (printable
// ASCII but '"' and '\'); the JSON body has the description as it is.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return ' '
		}
		return r
	}, s)
}

// verifyBearer is authenticate without the HTTP answer: a *refusal, a
// store error, or the caller.
func (s *Server) verifyBearer(ctx context.Context, raw string, use tokenUse) (*caller, error) {
	if raw == "" {
		return nil, &refusal{status: http.StatusUnauthorized, code: "invalid_request",
			description: "Send an access token as 'Authorization: Bearer <token>'."}
	}
	// Refresh tokens, authorization codes and API tokens are opaque, and ID
	// tokens say typ JWT: only an access token gets past these two checks.
	payload, typ, err := s.keys.Verify(ctx, raw)
	if err != nil {
		if tokens.ReasonOf(err) == 0 {
			return nil, err // the key record could not be read
		}
		return nil, invalidToken(notAnAccessToken(raw, err))
	}
	if !tokens.IsAccessTokenType(typ) {
		return nil, invalidToken("This is not an access token (an ID token, perhaps): send the access_token of the token response.")
	}
	now := s.cfg.Now()
	claims, err := tokens.AccessCheck{Issuer: s.cfg.Issuer, Audiences: s.cfg.APIAudience, Now: now}.Claims(payload)
	if errors.Is(err, tokens.WrongAudience) {
		return nil, invalidToken("This access token was issued for another audience, not for Stepup's own API.")
	}
	if err != nil {
		return nil, invalidToken(tokens.ReasonOf(err).Description() + ".")
	}
	if _, ok := s.clients.config(claims.ClientID); !ok {
		return nil, invalidToken("The access token's client no longer exists.")
	}
	family, _, _ := strings.Cut(claims.ID, ".")
	_, jwsSig, _ := cutLast(raw)
	signature := accessSignature(family, jwsSig)
	active, err := s.grants.accessTokenActive(ctx, signature)
	if err != nil {
		return nil, err
	}
	if !active {
		return nil, invalidToken("The access token was revoked: log in again.")
	}

	var user *User
	if use.person {
		u, err := s.people.User(ctx, claims.Subject)
		if err != nil && !errors.Is(err, directory.ErrNotFound) {
			return nil, err
		}
		if u == nil || claims.Grant == "client_credentials" {
			return nil, accessDenied("This call is for people; this token belongs to a client.")
		}
		if u.Disabled {
			return nil, invalidToken("The account was disabled.")
		}
		user = u
	}
	if use.firstParty && !slices.Contains(s.cfg.APIClients, claims.ClientID) {
		return nil, invalidToken("This access token was issued to " + truncate(claims.ClientID, 64) +
			", which may not use Stepup's own API: use a token of the Stepup CLI or console.")
	}
	if use.manage {
		if !slices.Contains(s.cfg.ManageClients, claims.ClientID) {
			return nil, accessDenied("Tokens of " + truncate(claims.ClientID, 64) + " may not change accounts or organizations.")
		}
		if sc := s.cfg.ManageScope; sc != "" && !slices.Contains(claims.Scope, sc) {
			return nil, &refusal{status: http.StatusForbidden, code: "insufficient_scope", scope: sc,
				description: "This call needs a token with the scope " + sc + "."}
		}
	}
	if use.byLogin && claims.Grant == "api_token" {
		return nil, accessDenied("Changing security settings needs a token from a login, not one bought with an API token.")
	}
	for _, sc := range use.scopes {
		if !slices.Contains(claims.Scope, sc) {
			return nil, &refusal{status: http.StatusForbidden, code: "insufficient_scope", scope: sc,
				description: "The access token was not granted the scope " + sc + "."}
		}
	}
	c := &caller{claims: claims, user: user, signature: signature}
	// The grant's session, read only when a check needs more than the
	// token says, and then once.
	var sess *Session
	grantSession := func() (*Session, error) {
		var err error
		if sess == nil {
			sess, err = s.grants.accessTokenSession(ctx, signature)
		}
		return sess, err
	}
	if user != nil && !user.SignedOutAt.IsZero() {
		// auth_time is in seconds; within the second of the change, the
		// grant's session says exactly.
		at := time.Unix(claims.AuthTime, 0)
		if at.Unix() == user.SignedOutAt.Unix() {
			gs, err := grantSession()
			if err != nil {
				return nil, err
			}
			at = gs.AuthTime()
		}
		if user.LoggedInBefore(at) {
			return nil, invalidToken("The password was changed after this token was issued: log in again.")
		}
	}
	if user != nil && slices.Contains(claims.AMR, tokens.MethodOTP) {
		// The token says auth_time in seconds, and of the newest factor;
		// the grant's session knows when the otp itself was proved.
		gs, err := grantSession()
		if err != nil {
			return nil, err
		}
		valid, err := s.mfa.otpStillValid(ctx, user.ID, gs.otpAt())
		if err != nil {
			return nil, err
		}
		if !valid {
			return nil, invalidToken("Your second factor was turned off or reset after this token was issued: log in again.")
		}
	}
	if user != nil && provedKey(claims.AMR) {
		gs, err := grantSession()
		if err != nil {
			return nil, err
		}
		valid, err := s.passkeys.keyStillValid(ctx, user.ID, gs.keyAt())
		if err != nil {
			return nil, err
		}
		if !valid {
			return nil, invalidToken("A passkey was removed after this token was issued: log in again.")
		}
	}
	return c, nil
}

// notAnAccessToken says what the caller sent instead, where that can be
// told from its shape.
func notAnAccessToken(raw string, err error) string {
	switch {
	case strings.HasPrefix(raw, "stpr_"):
		return "This is a refresh token: exchange it at the token endpoint and send the access token."
	case strings.HasPrefix(raw, "stpa_"):
		return "This is an API token: exchange it at the token endpoint (grant_type=api_token) and send the access token."
	case strings.HasPrefix(raw, "stpc_"):
		return "This is an authorization code, not an access token."
	}
	return tokens.ReasonOf(err).Description() + "."
}

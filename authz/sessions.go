package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/authz/step"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// A LoginSession is what a browser's cookie stands for: who logged in and
// each factor they completed, with when. Step-up adds factors to it; the amr
// and auth_time of every token come from it.
type LoginSession struct {
	UserID    string    `json:"user_id"`
	Factors   []Factor  `json:"factors"`
	CreatedAt time.Time `json:"created_at"`
	// person is the session's person as read when the session was, so
	// that the request reads them once.
	person *User
}

// Factor is one completed authentication method.
type Factor struct {
	Method string    `json:"method"` // pwd, otp, sso:<provider>
	At     time.Time `json:"at"`
	// Via tells how, where a method has several ways: "recovery" for an
	// otp factor completed with a recovery code; "mfa" for an SSO login the
	// trusted upstream did with multiple factors; "uv" for a key that
	// verified the person.
	Via string `json:"via,omitempty"`
}

// AMR is the session's amr claim. An SSO factor completed with the
// upstream's own MFA (Via "mfa", set only for trusted providers) counts as
// multi-factor.
func (ls *LoginSession) AMR() []string {
	methods := make([]string, 0, len(ls.Factors))
	upstreamMFA := false
	for _, f := range ls.Factors {
		methods = append(methods, f.Method)
		upstreamMFA = upstreamMFA || (strings.HasPrefix(f.Method, tokens.SSOPrefix) && f.Via == "mfa")
		if tokens.IsKey(f.Method) && f.Via == viaUserVerified {
			methods = append(methods, tokens.MethodUser)
		}
	}
	return tokens.AMR(methods, upstreamMFA)
}

// ssoLogins is when the person last logged in through each provider.
func (ls *LoginSession) ssoLogins() map[string]time.Time {
	var out map[string]time.Time
	for _, f := range ls.Factors {
		if id, ok := strings.CutPrefix(f.Method, tokens.SSOPrefix); ok {
			if out == nil {
				out = map[string]time.Time{}
			}
			out[id] = f.At
		}
	}
	return out
}

// AuthTime is when the most recent factor was completed.
func (ls *LoginSession) AuthTime() time.Time {
	var t time.Time
	for _, f := range ls.Factors {
		if f.At.After(t) {
			t = f.At
		}
	}
	return t
}

// PrimaryAt is when the person last proved who they are with a first factor
// (password, SSO, or a key that verified them); max_age is measured
// against it.
func (ls *LoginSession) PrimaryAt() time.Time {
	var t time.Time
	for _, f := range ls.Factors {
		primary := f.Method == tokens.MethodPassword || strings.HasPrefix(f.Method, tokens.SSOPrefix) ||
			tokens.IsKey(f.Method) && f.Via == viaUserVerified
		if primary && f.At.After(t) {
			t = f.At
		}
	}
	return t
}

// proved is what the session has proved, for the step function.
func (ls *LoginSession) proved() step.Session {
	out := step.Session{}
	for _, f := range ls.Factors {
		out[f.Method] = f.At
		if strings.HasPrefix(f.Method, tokens.SSOPrefix) && f.Via == "mfa" && f.At.After(out[tokens.MethodMFA]) {
			out[tokens.MethodMFA] = f.At
		}
		if tokens.IsKey(f.Method) && f.Via == viaUserVerified && f.At.After(out[tokens.MethodUser]) {
			out[tokens.MethodUser] = f.At
		}
	}
	return out
}

// factorAt is when method was last completed; zero if never.
func (ls *LoginSession) factorAt(method string) time.Time {
	for _, f := range ls.Factors {
		if f.Method == method {
			return f.At
		}
	}
	return time.Time{}
}

// keyAt is when the session last proved a passkey; zero if never.
func (ls *LoginSession) keyAt() time.Time {
	var at time.Time
	for _, f := range ls.Factors {
		if tokens.IsKey(f.Method) && f.At.After(at) {
			at = f.At
		}
	}
	return at
}

// addFactor records method as completed at now, replacing an older record
// of the same method.
func (ls *LoginSession) addFactor(method, via string, now time.Time) {
	ls.Factors = slices.DeleteFunc(ls.Factors, func(f Factor) bool { return f.Method == method })
	ls.Factors = append(ls.Factors, Factor{Method: method, At: now, Via: via})
}

// sessionStore keeps login sessions in the store under a hash of the cookie
// value, so the store never holds a usable session id.
type sessionStore struct {
	kv     storage.KV
	ttl    time.Duration
	now    func() time.Time
	secure bool
	// name is the cookie's (see cookieName).
	name string
	// prune drops the factors that no longer count (an otp proved before
	// MFA was turned off or reset) from every session read, and says
	// whether the session still stands (not if it began before the
	// person's password changed).
	prune func(context.Context, *LoginSession) (bool, error)
}

const sessionNS = "session"

func (s *sessionStore) cookieName() string { return s.name }

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return b64.EncodeToString(sum[:])
}

// The cookie is the session's id, and after a dot the person's id
// (base64url). The session's id alone finds the session; the person's id
// lets a request read the person along with it (see prefetch), and counts
// for nothing until the session names the same person. A cookie of the
// id alone, from before, still works.
const sessionIDLen = 43

func (s *sessionStore) cookie(r *http.Request) (id, person string, ok bool) {
	c, err := r.Cookie(s.cookieName())
	if err != nil || len(c.Value) < sessionIDLen {
		return "", "", false
	}
	id, rest := c.Value[:sessionIDLen], c.Value[sessionIDLen:]
	if rest == "" {
		return id, "", true
	}
	if rest[0] != '.' {
		return "", "", false
	}
	hint, err := b64.DecodeString(rest[1:])
	if err != nil {
		return "", "", false
	}
	return id, string(hint), true
}

// cookieValue is what the browser keeps; a person's id too long for a
// cookie is left out.
func cookieValue(id, person string) string {
	if len(person) > 256 {
		return id
	}
	return id + "." + b64.EncodeToString([]byte(person))
}

// hasCookie reports whether the browser sent a session cookie at all.
func (s *sessionStore) hasCookie(r *http.Request) bool {
	_, _, ok := s.cookie(r)
	return ok
}

// prefetch reads the browser's session with the request's next round trip
// and returns the person its cookie names, "" if none.
func (s *sessionStore) prefetch(ctx context.Context, r *http.Request) string {
	id, person, ok := s.cookie(r)
	if !ok {
		return ""
	}
	prefetch(ctx, sessionNS, sessionKey(id))
	return person
}

// get returns the browser's session, or nil if it has none (or it expired).
func (s *sessionStore) get(ctx context.Context, r *http.Request) (*LoginSession, string, error) {
	id, _, ok := s.cookie(r)
	if !ok {
		return nil, "", nil
	}
	data, err := s.kv.Get(ctx, sessionNS, sessionKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	var ls LoginSession
	if err := json.Unmarshal(data, &ls); err != nil {
		return nil, "", nil // unreadable: treat as logged out
	}
	if s.prune != nil {
		keep, err := s.prune(ctx, &ls)
		if err != nil {
			return nil, "", err
		}
		if !keep {
			return nil, "", nil
		}
	}
	return &ls, id, nil
}

// dropStaleFactors removes an otp factor that the person's factors epoch
// no longer honours, and a key factor the passkey epoch no longer does, so
// that the next step-up asks for a code or a key again.
func (s *Server) dropStaleFactors(ctx context.Context, ls *LoginSession) (bool, error) {
	u, err := s.user(ctx, ls.UserID)
	if err != nil || u == nil || u.LoggedInBefore(ls.CreatedAt) {
		return false, err
	}
	ls.person = u
	// Each key factor on its own: one proved after the epoch still counts.
	var failed error
	ls.Factors = slices.DeleteFunc(ls.Factors, func(f Factor) bool {
		if !tokens.IsKey(f.Method) || failed != nil {
			return false
		}
		valid, err := s.passkeys.keyStillValid(ctx, ls.UserID, f.At)
		failed = err
		return err == nil && !valid
	})
	if failed != nil {
		return true, failed
	}
	at := ls.factorAt(tokens.MethodOTP)
	if at.IsZero() {
		return true, nil
	}
	valid, err := s.mfa.otpStillValid(ctx, ls.UserID, at)
	if err != nil || valid {
		return true, err
	}
	ls.Factors = slices.DeleteFunc(ls.Factors, func(f Factor) bool { return f.Method == tokens.MethodOTP })
	return true, nil
}

// save stores ls under a new id and sets the cookie. A fresh id at every
// change of authentication defeats session fixation.
func (s *sessionStore) save(ctx context.Context, w http.ResponseWriter, ls *LoginSession, oldID string) error {
	return s.saveSoon(ctx, w, ls, oldID)()
}

// saveSoon is save with the writes queued for the request's next round
// trip (see later); the returned confirm waits for them and sets the
// cookie, and must come before the answer. The old session's removal goes
// with the new one's write: it was never more than tidying (the old id
// keeps only the factors it had), and if the store fails between the two
// the browser is at worst signed out.
func (s *sessionStore) saveSoon(ctx context.Context, w http.ResponseWriter, ls *LoginSession, oldID string) (confirm func() error) {
	data, err := json.Marshal(ls)
	if err != nil {
		return func() error { return err }
	}
	id := randomString(32)
	put := later(ctx, s.kv, storage.PutOp(sessionNS, sessionKey(id), data, s.ttl), false)
	var drop func()
	switch {
	case oldID == "":
	case cacheOf(ctx) != nil:
		// Not best-effort: a new session that never went takes the
		// removal of the old one with it.
		later(ctx, s.kv, storage.DeleteOp(sessionNS, sessionKey(oldID)), false)
	default:
		drop = func() { _ = s.kv.Delete(ctx, sessionNS, sessionKey(oldID)) }
	}
	return func() error {
		if err := put.outcome(ctx).Err; err != nil {
			return err
		}
		if drop != nil {
			drop()
		}
		http.SetCookie(w, &http.Cookie{
			Name: s.cookieName(), Value: cookieValue(id, ls.UserID), Path: "/", MaxAge: int(s.ttl.Seconds()),
			HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
		})
		return nil
	}
}

func (s *sessionStore) end(ctx context.Context, w http.ResponseWriter, id string) error {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	})
	if id == "" {
		return nil
	}
	return s.kv.Delete(ctx, sessionNS, sessionKey(id))
}

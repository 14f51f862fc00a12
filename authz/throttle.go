package authz

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// loginThrottle slows password guessing without letting a stranger lock a
// person out of their own account from the browsers they use.
//
//   - Per client address (an IPv6 /64), failures for any account count, up
//     to perAddress in a window. This is checked first, so a blocked
//     address writes nothing more.
//   - Per account and address, every attempt counts before the password is
//     checked (so parallel guesses cannot slip past), up to perPair in a
//     window; a success clears it. Guessing from one address locks out
//     only that address.
//   - Per account, failures from everywhere count over accountWindow (a
//     day). Past backoffAfter, attempts get one slot per account at a
//     time, each slot longer than the last up to maxBackoff: a guesser with
//     many addresses is slowed to about one guess a minute. A browser that
//     signed in to the account before, with the current password, carries
//     a device cookie and skips this part: the owner is not slowed on
//     their own devices. On a new one they wait for a slot like anyone.
type loginThrottle struct {
	kv            storage.KV
	window        time.Duration
	accountWindow time.Duration
	perPair       int64
	perAddress    int64
	backoffAfter  int64
	maxBackoff    time.Duration
	deviceKey     []byte
	secure        bool
	cookie        string // the device cookie's name (see cookieName)
}

const (
	throttleNS   = "login-fail"
	loginSlotNS  = "login-slot"
	deviceCookie = "stepup_device"
)

// accountKey names an account in throttle keys: hashed, so that a guesser
// sending 1 KiB usernames makes keys of fixed size.
func accountKey(username string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(username)))
	return b64.EncodeToString(sum[:18])
}

// prefetch reads the counters admit reads with the request's next round
// trip.
func (t *loginThrottle) prefetch(ctx context.Context, r *http.Request, username string) {
	prefetch(ctx, throttleNS, "addr:"+addressKey(clientIP(r)), "acct:"+accountKey(username))
}

// admit says whether an attempt may go ahead: "" if so, else what to tell
// the person. find looks the account up, for the password check that
// follows; admit returns whom it found. The attempt's count goes to the
// store with find's first read, and is judged before admit returns, so
// before any password is checked.
func (t *loginThrottle) admit(ctx context.Context, r *http.Request, username string, find func(context.Context) (*User, error)) (string, *User, error) {
	account, addr := accountKey(username), addressKey(clientIP(r))
	refused := "Too many failed sign-in attempts. Wait " + tokens.HumanDuration(t.window) + " and try again."
	addrFailures, err := counter(ctx, t.kv, throttleNS, "addr:"+addr)
	if err != nil || addrFailures >= t.perAddress {
		return refused, nil, err
	}
	count := later(ctx, t.kv, storage.IncrOp(throttleNS, "pair:"+account+"|"+addr, t.window), false)
	u, err := find(ctx)
	res := count.outcome(ctx)
	switch {
	case res.Err != nil:
		return refused, nil, res.Err
	case err != nil:
		return refused, nil, err
	case res.N > t.perPair:
		return refused, nil, nil
	}
	failures, err := counter(ctx, t.kv, throttleNS, "acct:"+account)
	if err != nil || failures < t.backoffAfter {
		return "", u, err
	}
	if known, err := t.knownDevice(r, username, u); err != nil || known {
		return "", u, err
	}
	slot := min(time.Duration(1)<<min(failures-t.backoffAfter, 16)*time.Second, t.maxBackoff)
	err = t.kv.Create(ctx, loginSlotNS, account, []byte{1}, slot)
	if errors.Is(err, storage.ErrAlreadyExists) {
		return "This account has had many failed sign-ins from elsewhere, so sign-ins to it are slowed down. Wait up to " +
			tokens.HumanDuration(slot) + " and try again, or sign in from a browser you have signed in from before.", nil, nil
	}
	return "", u, err
}

// failed records a wrong password. A failure to count is not the person's
// problem: the attempt was already counted per pair.
func (t *loginThrottle) failed(ctx context.Context, r *http.Request, username string) {
	later(ctx, t.kv, storage.IncrOp(throttleNS, "addr:"+addressKey(clientIP(r)), t.window), true)
	later(ctx, t.kv, storage.IncrOp(throttleNS, "acct:"+accountKey(username), t.accountWindow), true)
}

// succeeded clears this address's count for the account and gives the
// browser the account's device cookie.
func (t *loginThrottle) succeeded(ctx context.Context, w http.ResponseWriter, r *http.Request, username string, u *User) {
	later(ctx, t.kv, storage.DeleteOp(throttleNS, "pair:"+accountKey(username)+"|"+addressKey(clientIP(r))), true)
	device := randomString(16)
	http.SetCookie(w, &http.Cookie{
		Name: t.cookieName(), Value: device + "." + t.deviceMark(username, device, u.PasswordHash), Path: "/",
		MaxAge: int((365 * 24 * time.Hour).Seconds()), HttpOnly: true, Secure: t.secure, SameSite: http.SameSiteLaxMode,
	})
}

func (t *loginThrottle) cookieName() string { return t.cookie }

// deviceMark binds a browser's random device id to the account and to the
// password it signed in with: it cannot be made up, one browser's cookie
// says nothing about another's, and a new password voids every old one.
func (t *loginThrottle) deviceMark(username, device, passwordHash string) string {
	m := hmac.New(sha256.New, t.deviceKey)
	m.Write([]byte(strings.ToLower(username) + "\x00" + device + "\x00" + passwordHash))
	return b64.EncodeToString(m.Sum(nil))
}

// knownDevice reports whether the browser carries this account's device
// cookie, made with the account's current password; u is the account,
// nil when there is none.
func (t *loginThrottle) knownDevice(r *http.Request, username string, u *User) (bool, error) {
	c, err := r.Cookie(t.cookieName())
	if err != nil {
		return false, nil
	}
	device, mark, ok := strings.Cut(c.Value, ".")
	if !ok || len(device) != 22 {
		return false, nil
	}
	if u == nil || u.PasswordHash == "" {
		return false, nil
	}
	return subtle.ConstantTimeCompare([]byte(mark), []byte(t.deviceMark(username, device, u.PasswordHash))) == 1, nil
}

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

// admit says whether an attempt may go ahead: "" if so, else what to tell
// the person.
func (t *loginThrottle) admit(ctx context.Context, r *http.Request, username string, lookup passwordLookup) (string, error) {
	account, addr := accountKey(username), addressKey(clientIP(r))
	refused := "Too many failed sign-in attempts. Wait " + tokens.HumanDuration(t.window) + " and try again."
	addrFailures, err := counter(ctx, t.kv, throttleNS, "addr:"+addr)
	if err != nil || addrFailures >= t.perAddress {
		return refused, err
	}
	attempts, err := t.kv.Incr(ctx, throttleNS, "pair:"+account+"|"+addr, t.window)
	if err != nil || attempts > t.perPair {
		return refused, err
	}
	failures, err := counter(ctx, t.kv, throttleNS, "acct:"+account)
	if err != nil || failures < t.backoffAfter {
		return "", err
	}
	if known, err := t.knownDevice(ctx, r, username, lookup); err != nil || known {
		return "", err
	}
	slot := min(time.Duration(1)<<min(failures-t.backoffAfter, 16)*time.Second, t.maxBackoff)
	err = t.kv.Create(ctx, loginSlotNS, account, []byte{1}, slot)
	if errors.Is(err, storage.ErrAlreadyExists) {
		return "This account has had many failed sign-ins from elsewhere, so sign-ins to it are slowed down. Wait up to " +
			tokens.HumanDuration(slot) + " and try again, or sign in from a browser you have signed in from before.", nil
	}
	return "", err
}

// failed records a wrong password. A failure to count is not the person's
// problem: the attempt was already counted per pair.
func (t *loginThrottle) failed(ctx context.Context, r *http.Request, username string) {
	_, _ = t.kv.Incr(ctx, throttleNS, "addr:"+addressKey(clientIP(r)), t.window)
	_, _ = t.kv.Incr(ctx, throttleNS, "acct:"+accountKey(username), t.accountWindow)
}

// succeeded clears this address's count for the account and gives the
// browser the account's device cookie.
func (t *loginThrottle) succeeded(ctx context.Context, w http.ResponseWriter, r *http.Request, username string, u *User) {
	_ = t.kv.Delete(ctx, throttleNS, "pair:"+accountKey(username)+"|"+addressKey(clientIP(r)))
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

// passwordLookup is the account's password hash, "" when there is none.
type passwordLookup func(ctx context.Context, username string) (string, error)

// knownDevice reports whether the browser carries this account's device
// cookie, made with the account's current password.
func (t *loginThrottle) knownDevice(ctx context.Context, r *http.Request, username string, lookup passwordLookup) (bool, error) {
	c, err := r.Cookie(t.cookieName())
	if err != nil {
		return false, nil
	}
	device, mark, ok := strings.Cut(c.Value, ".")
	if !ok || len(device) != 22 {
		return false, nil
	}
	hash, err := lookup(ctx, username)
	if err != nil || hash == "" {
		return false, err
	}
	return subtle.ConstantTimeCompare([]byte(mark), []byte(t.deviceMark(username, device, hash))) == 1, nil
}

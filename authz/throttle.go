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
)

// loginThrottle slows password guessing without letting a stranger lock a
// person out of their own account.
//
//   - Per account and client address, every attempt counts before the
//     password is checked (so parallel guesses cannot slip past), up to
//     perPair in a window; a success clears it. Guessing from one address
//     locks out only that address.
//   - Per address, failures for any account count, up to perAddress.
//   - Per account, failures from everywhere count. Past backoffAfter in a
//     window, attempts without the account's device cookie get one slot
//     per account at a time, each slot longer than the last up to
//     maxBackoff: a guesser with many addresses is slowed to about one
//     guess a minute, and the owner, on a browser they have signed in
//     from before, is not slowed at all.
type loginThrottle struct {
	kv           storage.KV
	window       time.Duration
	perPair      int64
	perAddress   int64
	backoffAfter int64
	maxBackoff   time.Duration
	deviceKey    []byte
	secure       bool
}

const (
	throttleNS   = "login-fail"
	loginSlotNS  = "login-slot"
	deviceCookie = "stepup_device"
)

func accountKey(username string) string { return strings.ToLower(username) }

// admit says whether an attempt may go ahead: "" if so, else what to tell
// the person.
func (t *loginThrottle) admit(ctx context.Context, w http.ResponseWriter, r *http.Request, username string) (string, error) {
	account, addr := accountKey(username), clientIP(r)
	attempts, err := t.kv.Incr(ctx, throttleNS, "pair:"+account+"|"+addr, t.window)
	if err != nil {
		return "", err
	}
	addrFailures, err := counter(ctx, t.kv, throttleNS, "addr:"+addr)
	if err != nil {
		return "", err
	}
	if attempts > t.perPair || addrFailures >= t.perAddress {
		return "Too many failed sign-in attempts. Wait " + humanDuration(t.window) + " and try again.", nil
	}
	if t.knownDevice(r, account) {
		return "", nil
	}
	failures, err := counter(ctx, t.kv, throttleNS, "acct:"+account)
	if err != nil || failures < t.backoffAfter {
		return "", err
	}
	slot := min(time.Duration(1)<<min(failures-t.backoffAfter, 16)*time.Second, t.maxBackoff)
	err = t.kv.Create(ctx, loginSlotNS, account, []byte{1}, slot)
	if errors.Is(err, storage.ErrAlreadyExists) {
		return "This account has had many failed sign-ins from elsewhere, so sign-ins to it are slowed down. Wait up to " +
			humanDuration(slot) + " and try again, or sign in from a browser you have used here before.", nil
	}
	return "", err
}

// failed records a wrong password. A failure to count is not the person's
// problem: the attempt was already counted per pair.
func (t *loginThrottle) failed(ctx context.Context, r *http.Request, username string) {
	_, _ = t.kv.Incr(ctx, throttleNS, "addr:"+clientIP(r), t.window)
	_, _ = t.kv.Incr(ctx, throttleNS, "acct:"+accountKey(username), t.window)
}

// succeeded clears this address's count for the account and marks the
// browser as one the owner uses.
func (t *loginThrottle) succeeded(ctx context.Context, w http.ResponseWriter, r *http.Request, username, userID string) {
	_ = t.kv.Delete(ctx, throttleNS, "pair:"+accountKey(username)+"|"+clientIP(r))
	name := deviceCookie
	if t.secure {
		name = "__Host-" + deviceCookie
	}
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: t.deviceMark(accountKey(username)), Path: "/", MaxAge: int((365 * 24 * time.Hour).Seconds()),
		HttpOnly: true, Secure: t.secure, SameSite: http.SameSiteLaxMode,
	})
}

// deviceMark is what a browser that signed in to account carries: an HMAC,
// so it cannot be made up, and useless for anything but the throttle.
func (t *loginThrottle) deviceMark(account string) string {
	m := hmac.New(sha256.New, t.deviceKey)
	m.Write([]byte(account))
	return b64.EncodeToString(m.Sum(nil))
}

func (t *loginThrottle) knownDevice(r *http.Request, account string) bool {
	name := deviceCookie
	if t.secure {
		name = "__Host-" + deviceCookie
	}
	c, err := r.Cookie(name)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(t.deviceMark(account))) == 1
}

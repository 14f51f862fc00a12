package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/seal"
	"github.com/stepup-dev/stepup/mfa"
	"github.com/stepup-dev/stepup/tokens"
)

// enrollment is a person's authenticator: the TOTP secret (sealed, bound
// to the user), the hashes of the unused recovery codes, and the newest
// time step a code was accepted for. Every attempt at a code is one atomic
// update of this record, which counts it and, if the code is right, uses
// it up: a code works once across all replicas, and of attempts sent at
// once each is counted before the next is checked.
type enrollment struct {
	Secret    []byte    `json:"secret"`
	Recovery  []string  `json:"recovery"`
	LastStep  int64     `json:"last_step"`
	EnabledAt time.Time `json:"enabled_at"`
	// Attempts is how many codes were tried since the last right one,
	// counted in a fixed window from AttemptsSince; past the throttle's
	// free attempts, none goes ahead before WaitUntil.
	Attempts      int       `json:"attempts,omitempty"`
	AttemptsSince time.Time `json:"attempts_since,omitzero"`
	WaitUntil     time.Time `json:"wait_until,omitzero"`
}

// attemptWindow is how long failed attempts count against an account.
const attemptWindow = 24 * time.Hour

const (
	mfaNS      = "mfa"
	mfaSetupNS = "mfa-setup"
	mfaFailNS  = "mfa-fail"
	mfaLockNS  = "mfa-lock"
	setupTTL   = 15 * time.Minute
)

// secondFactors keeps enrollments and checks codes.
type secondFactors struct {
	kv            storage.KV
	box           *seal.Box
	recovery      *mfa.RecoveryHasher
	throttle      mfa.Throttle
	skew          uint
	issuer        string // shown in authenticator apps
	maxPerAddress int
	now           func() time.Time
	failures      *prometheus.CounterVec // by reason
}

func secretAAD(userID string) []byte { return []byte("stepup totp secret v1 " + userID) }

func (m *secondFactors) get(ctx context.Context, userID string) (*enrollment, error) {
	data, err := m.kv.Get(ctx, mfaNS, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e enrollment
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decoding the MFA enrollment of %s: %w", userID, err)
	}
	return &e, nil
}

// prefetch reads the enrollment with the request's next round trip, and
// for an attempt from addr ("": none) the address's failure count.
func (m *secondFactors) prefetch(ctx context.Context, userID, addr string) {
	prefetch(ctx, mfaNS, userID)
	if addr != "" {
		prefetch(ctx, mfaFailNS, "addr:"+addr)
	}
}

func (m *secondFactors) enabled(ctx context.Context, userID string) (bool, error) {
	e, err := m.get(ctx, userID)
	return e != nil, err
}

// otpStillValid reports whether an otp factor completed at the given time
// still counts. The enrollment's EnabledAt is the person's factors epoch:
// turning MFA off removes the enrollment and setting it up again starts a
// new one, so a code proved before either no longer counts, in sessions,
// refresh families and API tokens alike.
func (m *secondFactors) otpStillValid(ctx context.Context, userID string, at time.Time) (bool, error) {
	e, err := m.get(ctx, userID)
	if err != nil || e == nil {
		return false, err
	}
	return !at.Before(e.EnabledAt), nil
}

// startSetup makes a new secret for userID, kept server-side until it is
// confirmed with a code or expires; a person who reloads the page keeps
// the same secret.
func (m *secondFactors) startSetup(ctx context.Context, userID, account string) (mfa.Key, error) {
	if k, ok, err := m.pendingSetup(ctx, userID); err != nil || ok {
		return k, err
	}
	k, err := mfa.NewKey(m.issuer, account)
	if err != nil {
		return mfa.Key{}, err
	}
	data, err := json.Marshal(k)
	if err != nil {
		return mfa.Key{}, err
	}
	return k, m.kv.Put(ctx, mfaSetupNS, userID, m.box.Seal(data, secretAAD(userID)), setupTTL)
}

func (m *secondFactors) pendingSetup(ctx context.Context, userID string) (mfa.Key, bool, error) {
	sealed, err := m.kv.Get(ctx, mfaSetupNS, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return mfa.Key{}, false, nil
	}
	if err != nil {
		return mfa.Key{}, false, err
	}
	data, err := m.box.Open(sealed, secretAAD(userID))
	if err != nil {
		return mfa.Key{}, false, nil // sealed under another secret: start again
	}
	var k mfa.Key
	return k, json.Unmarshal(data, &k) == nil, nil
}

// Outcomes of a second-factor attempt that the person must be told about.
var (
	errCodeMalformed = errors.New("enter the 6-digit code from your authenticator app, or a recovery code")
	errCodeWrong     = errors.New("that code is not right")
	errCodeReplayed  = errors.New("that code was already used: wait for the next one")
	errNoSetup       = errors.New("the setup expired: start again")
)

// throttledError says when the person may try again.
type throttledError struct{ wait time.Duration }

func (e throttledError) Error() string {
	return "too many wrong codes: try again in " + tokens.HumanDuration(e.wait)
}

// confirmSetup enables MFA if code matches the pending secret, and returns
// the new recovery codes, shown once.
func (m *secondFactors) confirmSetup(ctx context.Context, userID, code, addr string) ([]string, error) {
	k, ok, err := m.pendingSetup(ctx, userID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNoSetup
	}
	var step int64
	err = m.attempt(ctx, userID, addr, func() error {
		var verr error
		step, verr = verifyTOTP(k.Secret, code, m.now(), m.skew)
		return verr
	})
	if err != nil {
		return nil, err
	}
	codes, hashes, err := m.newRecovery()
	if err != nil {
		return nil, err
	}
	e := enrollment{Secret: m.box.Seal([]byte(k.Secret), secretAAD(userID)), Recovery: hashes, LastStep: step, EnabledAt: m.now()}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if err := m.kv.Put(ctx, mfaNS, userID, data, 0); err != nil {
		return nil, err
	}
	_ = m.kv.Delete(ctx, mfaSetupNS, userID)
	return codes, nil
}

func (m *secondFactors) newRecovery() (codes, hashes []string, err error) {
	codes, err = mfa.NewRecoveryCodes(mfa.RecoveryCodeCount)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range codes {
		hashes = append(hashes, m.recovery.Hash(c))
	}
	return codes, hashes, nil
}

func verifyTOTP(secret, code string, now time.Time, skew uint) (int64, error) {
	step, err := mfa.Verify(secret, code, now, skew)
	switch {
	case errors.Is(err, mfa.ErrMalformedCode):
		return 0, errCodeMalformed
	case err != nil:
		return 0, errCodeWrong
	}
	return step, nil
}

// verify checks a TOTP or recovery code for an enrolled user and consumes
// it. It returns "totp" or "recovery".
//
// The throttle is attempt's, kept in the enrollment: a few free attempts
// per account, then one per growing wait; per address, a cap on failures.
// The count, the wait and the code's use are one update of the record, so
// the round trip that checks a code also counts it, and of several
// attempts at once, each sees the ones before.
func (m *secondFactors) verify(ctx context.Context, userID, code, addr string) (string, error) {
	via := "totp"
	if mfa.LooksLikeRecoveryCode(code) {
		via = "recovery"
	}
	if err := m.admitAddress(ctx, addr); err != nil {
		return via, err
	}
	var outcome error
	err := m.kv.Update(ctx, mfaNS, userID, 0, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errNoSetup
		}
		var e enrollment
		if err := json.Unmarshal(old, &e); err != nil {
			return nil, err
		}
		now := m.now()
		if wait := e.WaitUntil.Sub(now); wait > 0 {
			return nil, throttledError{wait}
		}
		if now.Sub(e.AttemptsSince) >= attemptWindow {
			e.Attempts, e.AttemptsSince = 0, now
		}
		e.Attempts++
		// Past the free attempts, this one takes the wait for itself.
		if wait := m.throttle.Wait(e.Attempts - 1); wait > 0 {
			e.WaitUntil = now.Add(wait)
		}
		outcome = m.use(&e, userID, code, via == "recovery", now)
		switch {
		case outcome == nil:
			e.Attempts, e.AttemptsSince, e.WaitUntil = 0, time.Time{}, time.Time{}
		case !errors.Is(outcome, errCodeWrong) && !errors.Is(outcome, errCodeReplayed) && !errors.Is(outcome, errCodeMalformed):
			return nil, outcome // the server's fault, not the attempt's
		}
		return json.Marshal(e)
	})
	var te throttledError
	switch {
	case errors.As(err, &te):
		m.failures.WithLabelValues("throttled").Inc()
		return via, err
	case err != nil:
		return via, err
	}
	m.failed(ctx, addr, outcome)
	return via, outcome
}

// use checks code against e and uses it up: a TOTP step must be newer
// than the last one accepted; a recovery code is removed.
func (m *secondFactors) use(e *enrollment, userID, code string, recovery bool, now time.Time) error {
	if recovery {
		if _, ok := mfa.NormalizeRecoveryCode(code); !ok {
			return errCodeMalformed
		}
		i := m.recovery.Match(e.Recovery, code)
		if i < 0 {
			return errCodeWrong
		}
		e.Recovery[i] = ""
		return nil
	}
	secret, err := m.box.Open(e.Secret, secretAAD(userID))
	if err != nil {
		return fmt.Errorf("the TOTP secret of %s cannot be decrypted: %w", userID, err)
	}
	step, err := verifyTOTP(string(secret), code, now, m.skew)
	if err != nil {
		return err
	}
	if step <= e.LastStep {
		return errCodeReplayed
	}
	e.LastStep = step
	return nil
}

// admitAddress refuses an attempt from an address past its cap on
// failures.
func (m *secondFactors) admitAddress(ctx context.Context, addr string) error {
	n, err := counter(ctx, m.kv, mfaFailNS, "addr:"+addr)
	if err != nil {
		return err
	}
	if n >= int64(m.maxPerAddress) {
		m.failures.WithLabelValues("throttled").Inc()
		return throttledError{m.throttle.Max}
	}
	return nil
}

// failed counts a wrong or replayed code against its address, with the
// request's next round trip: it counts for the next attempt, not this one.
func (m *secondFactors) failed(ctx context.Context, addr string, err error) {
	reason := "wrong"
	switch {
	case errors.Is(err, errCodeReplayed):
		reason = "replayed"
	case !errors.Is(err, errCodeWrong):
		return
	}
	m.failures.WithLabelValues(reason).Inc()
	later(ctx, m.kv, storage.IncrOp(mfaFailNS, "addr:"+addr, m.throttle.Max), true)
}

// attempt runs check under the throttle, for the code that confirms a new
// authenticator, which has no enrollment yet to keep its count (see
// verify): the account's count and wait are counters of their own.
func (m *secondFactors) attempt(ctx context.Context, userID, addr string, check func() error) error {
	if until, err := m.kv.Get(ctx, mfaLockNS, userID); err == nil {
		if wait := m.remaining(until); wait > 0 {
			m.failures.WithLabelValues("throttled").Inc()
			return throttledError{wait}
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if err := m.admitAddress(ctx, addr); err != nil {
		return err
	}
	n, err := m.kv.Incr(ctx, mfaFailNS, "acct:"+userID, attemptWindow)
	if err != nil {
		return err
	}
	// Past the free attempts, each attempt must take the lock: of several
	// sent at once, one goes ahead.
	if wait := m.throttle.Wait(int(n - 1)); wait > 0 {
		until := strconv.FormatInt(m.now().Add(wait).Unix(), 10)
		if err := m.kv.Create(ctx, mfaLockNS, userID, []byte(until), wait); errors.Is(err, storage.ErrAlreadyExists) {
			m.failures.WithLabelValues("throttled").Inc()
			return throttledError{wait}
		} else if err != nil {
			return err
		}
	}
	err = check()
	if err == nil {
		// What follows the check counts for the next attempt, not this one.
		later(ctx, m.kv, storage.DeleteOp(mfaFailNS, "acct:"+userID), true)
		later(ctx, m.kv, storage.DeleteOp(mfaLockNS, userID), true)
	}
	m.failed(ctx, addr, err)
	return err
}

func (m *secondFactors) remaining(until []byte) time.Duration {
	unix, err := strconv.ParseInt(string(until), 10, 64)
	if err != nil {
		return 0
	}
	return time.Unix(unix, 0).Sub(m.now())
}

// regenerate replaces the recovery codes after checking a current code.
func (m *secondFactors) regenerate(ctx context.Context, userID, code, addr string) ([]string, error) {
	if _, err := m.verify(ctx, userID, code, addr); err != nil {
		return nil, err
	}
	codes, hashes, err := m.newRecovery()
	if err != nil {
		return nil, err
	}
	err = m.kv.Update(ctx, mfaNS, userID, 0, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errNoSetup
		}
		var e enrollment
		if err := json.Unmarshal(old, &e); err != nil {
			return nil, err
		}
		e.Recovery = hashes
		return json.Marshal(e)
	})
	return codes, err
}

// disable turns MFA off after checking a current code.
func (m *secondFactors) disable(ctx context.Context, userID, code, addr string) error {
	if _, err := m.verify(ctx, userID, code, addr); err != nil {
		return err
	}
	if _, err := (certLedgers{kv: m.kv, now: m.now}).revoke(ctx, certificatesOfMFAOff(userID)); err != nil {
		return err
	}
	return m.kv.Delete(ctx, mfaNS, userID)
}

func (e *enrollment) recoveryLeft() int {
	n := 0
	for _, h := range e.Recovery {
		if h != "" {
			n++
		}
	}
	return n
}

// counter reads a counter; an absent one is zero.
func counter(ctx context.Context, kv storage.KV, ns, key string) (int64, error) {
	v, err := kv.Get(ctx, ns, key)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

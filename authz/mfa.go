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
// time step a code was accepted for. Every use of a factor is one atomic
// update of this record, so a code works once across all replicas.
type enrollment struct {
	Secret    []byte    `json:"secret"`
	Recovery  []string  `json:"recovery"`
	LastStep  int64     `json:"last_step"`
	EnabledAt time.Time `json:"enabled_at"`
}

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
// for an attempt from addr ("": none) the throttle's lock and counter.
func (m *secondFactors) prefetch(ctx context.Context, userID, addr string) {
	prefetch(ctx, mfaNS, userID)
	if addr != "" {
		prefetch(ctx, mfaLockNS, userID)
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
func (m *secondFactors) verify(ctx context.Context, userID, code, addr string) (string, error) {
	via := "totp"
	if mfa.LooksLikeRecoveryCode(code) {
		via = "recovery"
	}
	err := m.attempt(ctx, userID, addr, func() error { return m.use(ctx, userID, code, via == "recovery") })
	return via, err
}

// use consumes a code in one atomic update of the enrollment: a TOTP step
// must be newer than the last one accepted; a recovery code is removed.
func (m *secondFactors) use(ctx context.Context, userID, code string, recovery bool) error {
	return m.kv.Update(ctx, mfaNS, userID, 0, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errNoSetup
		}
		var e enrollment
		if err := json.Unmarshal(old, &e); err != nil {
			return nil, err
		}
		if recovery {
			if _, ok := mfa.NormalizeRecoveryCode(code); !ok {
				return nil, errCodeMalformed
			}
			i := m.recovery.Match(e.Recovery, code)
			if i < 0 {
				return nil, errCodeWrong
			}
			e.Recovery[i] = ""
		} else {
			secret, err := m.box.Open(e.Secret, secretAAD(userID))
			if err != nil {
				return nil, fmt.Errorf("the TOTP secret of %s cannot be decrypted: %w", userID, err)
			}
			step, err := verifyTOTP(string(secret), code, m.now(), m.skew)
			if err != nil {
				return nil, err
			}
			if step <= e.LastStep {
				return nil, errCodeReplayed
			}
			e.LastStep = step
		}
		return json.Marshal(e)
	})
}

// attempt runs check under the throttle: a few free attempts per account,
// then one attempt per growing wait; per address, a cap on failures. A
// success clears the account's count.
func (m *secondFactors) attempt(ctx context.Context, userID, addr string, check func() error) error {
	if until, err := m.kv.Get(ctx, mfaLockNS, userID); err == nil {
		if wait := m.remaining(until); wait > 0 {
			m.failures.WithLabelValues("throttled").Inc()
			return throttledError{wait}
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if n, err := counter(ctx, m.kv, mfaFailNS, "addr:"+addr); err != nil {
		return err
	} else if n >= int64(m.maxPerAddress) {
		m.failures.WithLabelValues("throttled").Inc()
		return throttledError{m.throttle.Max}
	}
	n, err := m.kv.Incr(ctx, mfaFailNS, "acct:"+userID, 24*time.Hour)
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
	// What follows the check counts for the next attempt, not this one,
	// so it goes with the request's next round trip (the session's write).
	switch {
	case err == nil:
		later(ctx, m.kv, storage.DeleteOp(mfaFailNS, "acct:"+userID), true)
		later(ctx, m.kv, storage.DeleteOp(mfaLockNS, userID), true)
	case errors.Is(err, errCodeWrong), errors.Is(err, errCodeReplayed):
		reason := "wrong"
		if errors.Is(err, errCodeReplayed) {
			reason = "replayed"
		}
		m.failures.WithLabelValues(reason).Inc()
		later(ctx, m.kv, storage.IncrOp(mfaFailNS, "addr:"+addr, m.throttle.Max), true)
	}
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

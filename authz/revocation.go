package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// Revocable SSH certificates. Every certificate POST /ssh signs is entered
// in its person's ledger: serial, CA, grant family, token id, the login's
// auth_time and when it expires. Revoking (a grant, a session's logins, all
// of a person's logins) marks the matching entries and copies them to the
// one revocation list, which GET /ssh/krl serves as an OpenSSH KRL (sshd's
// RevokedKeys) and GET /ssh/revoked as JSON (the gateway's poll), until the
// certificates expire.
//
// Where the revocation also ended the tokens it came from (a grant
// revoked, a password changed, MFA turned off, an account disabled), it is
// kept in the ledger for a certificate's lifetime as a rule that refuses
// new certificates for those tokens: a certificate asked for while the
// revocation happens (its token checked just before, entered just after)
// is refused when it is entered, so none slips between the two. Where the
// tokens stay good (signing out of the browser, leaving an organization),
// a certificate asked for at that moment is no different from one asked
// for just after, and there is no rule.
//
// Both records live in storage.KV and change only through Update, which is
// atomic per key on every backend (also in a Redis Cluster: each is one
// key).

const (
	certNS = "ssh-certs"
	// revokedKey holds the revocation list; ledgers are "person/<user id>".
	revokedKey = "revoked"
	// certGrace keeps an expired certificate listed a little longer, for
	// gateways whose clocks lag ours: the CA backdates ValidAfter by as
	// much for the same reason.
	certGrace = sshca.DefaultBackdate
	// ruleLifetime is how long a rule refuses new certificates: the
	// longest a certificate lives, far past any request in flight.
	ruleLifetime = sshca.DefaultMaxTTL
	// maxRules bounds the revocations a ledger remembers; beyond, the
	// oldest give way (their certificates stay revoked and listed).
	maxRules = 100
)

// Why certificates were revoked, for the log and the refusal of new ones.
const (
	revokedGrant    = "the token or its grant was revoked"
	revokedLogout   = "signed out"
	revokedMFAOff   = "multi-factor authentication was turned off"
	revokedRemoved  = "removed from an organization"
	revokedDisabled = "the account was disabled"
	revokedPassword = "the password was changed"
	revokedPasskey  = "a passkey was removed"
)

// certsOf says which certificates a revocation takes: those of one grant
// family, or those of a person's logins whose auth_time lies in
// [From, Before). As a ledger's rule it also refuses new ones.
type certsOf struct {
	User  string `json:"-"`
	Grant string `json:"grant,omitempty"`
	// From and Before bound the logins' auth_time, in Unix seconds;
	// Before 0 is no upper bound.
	From   int64 `json:"from,omitempty"`
	Before int64 `json:"before,omitempty"`
	// OTP narrows a rule to logins that proved an otp, Key to those that
	// proved a passkey.
	OTP    bool   `json:"otp,omitempty"`
	Key    bool   `json:"key,omitempty"`
	Reason string `json:"reason"`
	// Until is when the rule lapses.
	Until int64 `json:"until"`
	// rule says whether the revocation is kept as a rule, refusing new
	// certificates for the tokens it ended, and which.
	rule ruleKind
}

type ruleKind uint8

const (
	noRule  ruleKind = iota
	ruleAll          // the same certificates as the revocation
	ruleOTP          // of those, the logins that proved an otp
)

// certificatesOfGrant are the certificates issued for tokens of one grant
// family, whoever's it is.
func certificatesOfGrant(family string) certsOf {
	return certsOf{Grant: family, Reason: revokedGrant, rule: ruleAll}
}

// certificatesOfPerson are all the certificates of userID. With the
// reasons that end the person's tokens, it is a rule against the logins
// before the revocation (not those in its very second, which may be made
// just after it, as the fresh login of a password change is).
func certificatesOfPerson(userID, reason string) certsOf {
	by := certsOf{User: userID, Reason: reason}
	if reason == revokedPassword || reason == revokedDisabled {
		by.rule = ruleAll
	}
	return by
}

// certificatesOfMFAOff are all of userID's certificates, and a rule against
// the earlier logins that proved an otp, whose tokens turning MFA off
// ends.
func certificatesOfMFAOff(userID string) certsOf {
	return certsOf{User: userID, Reason: revokedMFAOff, rule: ruleOTP}
}

// certificatesOfKeyRemoved are userID's certificates of logins that proved
// a passkey, and a rule against them: removing a passkey ends their
// tokens.
func certificatesOfKeyRemoved(userID string) certsOf {
	return certsOf{User: userID, Key: true, Reason: revokedPasskey, rule: ruleAll}
}

// certificatesOfSession are the certificates of the logins a browser
// session made: their auth_time is one of its factors' times.
func certificatesOfSession(ls *LoginSession) certsOf {
	if ls == nil {
		return certsOf{}
	}
	from, to := ls.CreatedAt, ls.AuthTime()
	for _, f := range ls.Factors {
		if f.At.Before(from) {
			from = f.At
		}
	}
	return certsOf{User: ls.UserID, From: from.Unix(), Before: to.Unix() + 1, Reason: revokedLogout}
}

// certificatesOfDisabled are u's certificates if u is now disabled, and
// none otherwise (an account enabled again).
func certificatesOfDisabled(u *User) certsOf {
	if u == nil || !u.Disabled {
		return certsOf{}
	}
	return certificatesOfPerson(u.ID, revokedDisabled)
}

func (by certsOf) matches(c issuedCert) bool {
	if by.Grant != "" {
		return c.Grant == by.Grant
	}
	return c.AuthTime >= by.From && (by.Before == 0 || c.AuthTime < by.Before) && (!by.OTP || c.OTP) && (!by.Key || c.Key)
}

// issuedCert is one certificate in a ledger.
type issuedCert struct {
	Serial   uint64 `json:"serial,string"`
	CA       string `json:"ca"`    // the signing key, an authorized_keys line
	Grant    string `json:"grant"` // the token's grant family
	TokenID  string `json:"jti"`
	AuthTime int64  `json:"auth_time"`
	OTP      bool   `json:"otp,omitempty"` // the login proved an otp
	Key      bool   `json:"key,omitempty"` // the login proved a passkey
	Expires  int64  `json:"exp"`           // ValidBefore
	Revoked  bool   `json:"revoked,omitempty"`
}

// ledger is one person's certificates and the revocations that refuse new
// ones.
type ledger struct {
	Certs []issuedCert `json:"certs,omitempty"`
	Rules []certsOf    `json:"rules,omitempty"`
}

// revocationList is every revoked certificate not yet expired.
type revocationList struct {
	// Version grows with every change (the KRL's krl_version); Changed is
	// when it last did (its generated_date).
	Version uint64       `json:"version"`
	Changed int64        `json:"changed"`
	Certs   []issuedCert `json:"certs"`
}

// errCertificatesRevoked refuses a certificate for what a revocation took.
type errCertificatesRevoked struct{ reason string }

func (e *errCertificatesRevoked) Error() string {
	return "this login's SSH certificates were revoked (" + e.reason + ")"
}

// errTooManyCertificates refuses a certificate beyond Config.MaxLiveCertificates.
var errTooManyCertificates = errors.New("too many live SSH certificates")

// certLedgers reads and writes ledgers and the revocation list. It is a
// value over the store, so that the places that revoke and have no Server
// at hand (the grant store, the second factors) make one as well.
type certLedgers struct {
	kv  storage.KV
	now func() time.Time
	// max is how many live certificates a person's ledger takes.
	max int
}

func (s *Server) certLedgers() certLedgers {
	return certLedgers{kv: s.store, now: s.cfg.Now, max: s.cfg.MaxLiveCertificates}
}

func ledgerKey(userID string) string { return "person/" + userID }

// revokeCertificates revokes the certificates by selects: marks them in
// the person's ledger, with a rule against new ones, and lists them.
func (s *Server) revokeCertificates(ctx context.Context, by certsOf) error {
	n, err := s.certLedgers().revoke(ctx, by)
	if err == nil && n > 0 {
		s.log.Info("revoked SSH certificates", "user", by.User, "grant", by.Grant, "reason", by.Reason, "count", n)
	}
	return err
}

// revokeCertificates is the grant store's: the certificates of a family,
// revoked before its tokens are, while the family still says whose it is.
func (g *grantStore) revokeCertificates(ctx context.Context, family string) error {
	kv, ok := g.grants.(storage.KV)
	if !ok {
		return errors.New("the grant store keeps no SSH certificate ledgers")
	}
	f, err := g.family(ctx, family)
	if err != nil {
		return err
	}
	by := certificatesOfGrant(family)
	for _, e := range f {
		if sub := recordSubject(e.Value); sub != "" {
			by.User = sub
			break
		}
	}
	_, err = certLedgers{kv: kv, now: g.now}.revoke(ctx, by)
	return err
}

// revoke applies by and returns how many live certificates it took.
func (l certLedgers) revoke(ctx context.Context, by certsOf) (int, error) {
	if by.User == "" {
		return 0, nil
	}
	now := l.now()
	rule := by
	rule.Until = now.Add(ruleLifetime).Unix()
	rule.OTP = by.rule == ruleOTP
	if rule.Grant == "" {
		rule.Before = now.Unix()
	}
	var taken []issuedCert
	err := l.kv.Update(ctx, certNS, ledgerKey(by.User), ledgerTTL, func(old []byte) ([]byte, error) {
		taken = nil
		lg, err := readLedger(old)
		if err != nil {
			return nil, err
		}
		lg.prune(now)
		for i := range lg.Certs {
			if by.matches(lg.Certs[i]) {
				// Also the already revoked: a revocation that failed
				// half-way is completed by the next.
				lg.Certs[i].Revoked = true
				taken = append(taken, lg.Certs[i])
			}
		}
		if by.rule != noRule {
			lg.Rules = append(lg.Rules, rule)
		}
		if len(lg.Rules) > maxRules {
			lg.Rules = lg.Rules[len(lg.Rules)-maxRules:]
		}
		return lg.encode()
	})
	if err != nil || len(taken) == 0 {
		return 0, err
	}
	return len(taken), l.list(ctx, now, taken)
}

// list adds certs to the revocation list.
func (l certLedgers) list(ctx context.Context, now time.Time, certs []issuedCert) error {
	// The list never expires, so that its version only grows; what it
	// holds is pruned at each write and filtered at each read.
	return l.kv.Update(ctx, certNS, revokedKey, 0, func(old []byte) ([]byte, error) {
		var rl revocationList
		if old != nil {
			if err := json.Unmarshal(old, &rl); err != nil {
				return nil, fmt.Errorf("decoding the SSH revocation list: %w", err)
			}
		}
		live := rl.live(now)
		changed := len(live) != len(rl.Certs)
		for _, c := range certs {
			if !slices.ContainsFunc(live, func(o issuedCert) bool { return o.Serial == c.Serial && o.CA == c.CA }) {
				c.Revoked = false // implied
				live = append(live, c)
				changed = true
			}
		}
		if !changed {
			return old, nil
		}
		rl.Version++
		rl.Changed = now.Unix()
		rl.Certs = live
		return json.Marshal(rl)
	})
}

// issued enters cert, signed by ca for the token tokenID of userID, in the
// person's ledger, unless a revocation refuses it.
func (l certLedgers) issued(ctx context.Context, userID, tokenID string, authTime int64, amr []string, cert *ssh.Certificate, ca ssh.PublicKey) error {
	now := l.now()
	family, _, _ := strings.Cut(tokenID, ".")
	entry := issuedCert{
		Serial: cert.Serial, CA: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca))), Grant: family,
		TokenID: tokenID, AuthTime: authTime, OTP: slices.Contains(amr, tokens.MethodOTP), Key: provedKey(amr), Expires: int64(cert.ValidBefore),
	}
	return l.kv.Update(ctx, certNS, ledgerKey(userID), ledgerTTL, func(old []byte) ([]byte, error) {
		lg, err := readLedger(old)
		if err != nil {
			return nil, err
		}
		lg.prune(now)
		for _, r := range lg.Rules {
			if r.matches(entry) {
				return nil, &errCertificatesRevoked{reason: r.Reason}
			}
		}
		if len(lg.Certs) >= l.max {
			return nil, errTooManyCertificates
		}
		lg.Certs = append(lg.Certs, entry)
		return lg.encode()
	})
}

// revoked is the revocation list as of now: only certificates that have
// not expired (give or take certGrace).
func (l certLedgers) revoked(ctx context.Context) (revocationList, error) {
	var rl revocationList
	data, err := l.kv.Get(ctx, certNS, revokedKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return rl, nil
	case err != nil:
		return rl, err
	}
	if err := json.Unmarshal(data, &rl); err != nil {
		return rl, fmt.Errorf("decoding the SSH revocation list: %w", err)
	}
	rl.Certs = rl.live(l.now())
	return rl, nil
}

func (rl revocationList) live(now time.Time) []issuedCert {
	return slices.DeleteFunc(slices.Clone(rl.Certs), func(c issuedCert) bool { return expired(c, now) })
}

func expired(c issuedCert, now time.Time) bool {
	return !now.Before(time.Unix(c.Expires, 0).Add(certGrace))
}

func readLedger(data []byte) (ledger, error) {
	var lg ledger
	if data == nil {
		return lg, nil
	}
	if err := json.Unmarshal(data, &lg); err != nil {
		return lg, fmt.Errorf("decoding an SSH certificate ledger: %w", err)
	}
	return lg, nil
}

// prune drops expired certificates and rules past their time.
func (lg *ledger) prune(now time.Time) {
	lg.Certs = slices.DeleteFunc(lg.Certs, func(c issuedCert) bool { return expired(c, now) })
	lg.Rules = slices.DeleteFunc(lg.Rules, func(r certsOf) bool { return r.Until <= now.Unix() })
}

// ledgerTTL keeps a ledger as long as anything written to it matters:
// each write is a certificate that expires within the hour (and
// certGrace) or a rule that holds for ruleLifetime, so the last write's
// content is over by then.
const ledgerTTL = max(ruleLifetime, sshca.DefaultMaxTTL) + certGrace

// encode is the ledger to store; an empty one is deleted.
func (lg ledger) encode() ([]byte, error) {
	if len(lg.Certs) == 0 && len(lg.Rules) == 0 {
		return nil, nil
	}
	return json.Marshal(lg)
}

// routeRevocation mounts the SSH certificate revocation list.
func (s *Server) routeRevocation(r Router, h func(http.HandlerFunc) http.Handler) {
	r.Method(http.MethodGet, "/ssh/krl", h(s.sshKRL))
	r.Method(http.MethodGet, "/ssh/revoked", h(s.sshRevoked))
}

// revocationETag names one state of the list: its version and how many
// certificates are still live, which within a version only falls.
func revocationETag(rl revocationList) string {
	return `"` + strconv.FormatUint(rl.Version, 10) + "." + strconv.Itoa(len(rl.Certs)) + `"`
}

// revocationAnswer reads the list for a GET and answers 304 where the
// client has it already; ok reports whether the caller should write it.
func (s *Server) revocationAnswer(w http.ResponseWriter, r *http.Request) (revocationList, bool) {
	rl, err := s.certLedgers().revoked(r.Context())
	if err != nil {
		s.storeOrInternal(w, err)
		return rl, false
	}
	tag := revocationETag(rl)
	w.Header().Set("ETag", tag)
	// Caches must ask each time; a poll that finds no change costs a 304.
	w.Header().Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && slices.Contains(strings.Split(strings.ReplaceAll(inm, " ", ""), ","), tag) {
		w.WriteHeader(http.StatusNotModified)
		return rl, false
	}
	return rl, true
}

// sshKRL is GET /ssh/krl: the revoked certificates that have not expired,
// as an OpenSSH KRL for sshd's RevokedKeys.
func (s *Server) sshKRL(w http.ResponseWriter, r *http.Request) {
	rl, ok := s.revocationAnswer(w, r)
	if !ok {
		return
	}
	krl := sshca.KRL{Version: rl.Version, Generated: time.Unix(rl.Changed, 0), Comment: "Stepup " + s.cfg.Issuer}
	byCA := map[string]int{}
	for _, c := range rl.Certs {
		i, seen := byCA[c.CA]
		if !seen {
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.CA))
			if err != nil {
				s.log.Error("an unreadable CA key in the SSH revocation list", "ca", c.CA, "err", err)
				continue
			}
			i = len(krl.Revoked)
			byCA[c.CA] = i
			krl.Revoked = append(krl.Revoked, sshca.RevokedSerials{CA: key})
		}
		krl.Revoked[i].Serials = append(krl.Revoked[i].Serials, c.Serial)
	}
	data, err := krl.Marshal()
	if err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="stepup.krl"`)
	_, _ = w.Write(data)
}

// revokedView is one entry of GET /ssh/revoked.
type revokedView struct {
	// Serial in decimal: a 64-bit serial does not survive a JSON number
	// in every language.
	Serial    string `json:"serial"`
	TokenID   string `json:"token_id"`
	ExpiresAt int64  `json:"expires_at"`
}

// sshRevoked is GET /ssh/revoked: the same list as JSON, for gateways that
// check serials and token ids themselves. Poll it with If-None-Match.
func (s *Server) sshRevoked(w http.ResponseWriter, r *http.Request) {
	rl, ok := s.revocationAnswer(w, r)
	if !ok {
		return
	}
	out := make([]revokedView, 0, len(rl.Certs))
	for _, c := range rl.Certs {
		out = append(out, revokedView{Serial: strconv.FormatUint(c.Serial, 10), TokenID: c.TokenID, ExpiresAt: c.Expires})
	}
	w.Header().Set("Content-Type", "application/json")
	writeJSONBody(w, map[string]any{"version": rl.Version, "revoked": out})
}

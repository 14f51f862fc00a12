package authz

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/mfa"
)

const (
	// reminderGuardNS holds one entry per member for the throttle interval:
	// creating it is what allows a reminder, so concurrent batches send one.
	reminderGuardNS = "mfa-reminder-guard"
	// remindedNS keeps when each member was last reminded, for the
	// members list.
	remindedNS = "mfa-reminded"
	// maxReminderBatch bounds one request's list of members.
	maxReminderBatch = 1000
)

type skipped struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// sendReminders is POST /api/orgs/{org}/mfa-reminders with
// {"user_ids": [...]} or {"all_without_mfa": true}.
func (s *Server) sendReminders(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, ok := s.orgCaller(w, r, useManage)
	if !ok || !q.admin(w) {
		return
	}
	var body struct {
		UserIDs       []string `json:"user_ids"`
		AllWithoutMFA bool     `json:"all_without_mfa"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || (len(body.UserIDs) == 0) == !body.AllWithoutMFA || len(body.UserIDs) > maxReminderBatch {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send {"user_ids": ["…"]} (up to 1000 members) or {"all_without_mfa": true}.`)
		return
	}
	sent, skips, err := s.remindMembers(ctx, q, body.UserIDs, body.AllWithoutMFA)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sent": sent, "skipped": skips})
}

// remindMembers reminds the given members, or all members without MFA,
// and records the batch in the audit log.
func (s *Server) remindMembers(ctx context.Context, q *orgRequest, ids []string, allWithoutMFA bool) (sent []string, skips []skipped, err error) {
	if allWithoutMFA {
		members, err := s.allMembers(ctx, q.org.ID)
		if err != nil {
			return nil, nil, err
		}
		ids = nil
		for _, m := range members {
			ids = append(ids, m.User.ID)
		}
	}
	sent, skips = []string{}, []skipped{}
	for _, id := range dedupe(ids) {
		reason, err := s.remind(ctx, q, id)
		switch {
		case err != nil:
			return nil, nil, err
		case reason != "":
			if !(allWithoutMFA && reason == "mfa_enabled") {
				skips = append(skips, skipped{ID: id, Reason: reason})
			}
		default:
			sent = append(sent, id)
		}
	}
	if err := s.audit(ctx, q.org.ID, auditEvent{At: s.cfg.Now().UTC(), Actor: q.user.ID, Action: "mfa_reminders.send",
		Detail: map[string]any{"sent": sent, "skipped": skips}}); err != nil {
		s.log.Error("audit", "org", q.org.ID, "err", err)
	}
	return sent, skips, nil
}

// remind sends one member a reminder, or says why not: not_a_member,
// mfa_enabled, reminded_recently, no_email, delivery_failed, or self (a
// person who wants MFA needs no email about it).
func (s *Server) remind(ctx context.Context, q *orgRequest, userID string) (string, error) {
	u, err := s.user(ctx, userID)
	if err != nil {
		return "", err
	}
	if u == nil {
		return "not_a_member", nil
	}
	if _, err := s.people.Role(ctx, q.org.ID, userID); errors.Is(err, directory.ErrNotMember) {
		return "not_a_member", nil
	} else if err != nil {
		return "", err
	}
	if enrolled, err := s.hasSecondFactor(ctx, userID); err != nil {
		return "", err
	} else if enrolled {
		return "mfa_enabled", nil
	}
	if userID == q.user.ID {
		return "self", nil
	}
	if u.Email == "" {
		return "no_email", nil
	}
	key := q.org.ID + "/" + userID
	now := s.cfg.Now().UTC()
	err = s.store.Create(ctx, reminderGuardNS, key, []byte(now.Format(time.RFC3339)), s.cfg.ReminderInterval)
	if errors.Is(err, storage.ErrAlreadyExists) {
		return "reminded_recently", nil
	}
	if err != nil {
		return "", err
	}
	msg, err := mfa.Reminder{From: s.cfg.MailFrom, To: u.Email, Username: u.Username, OrgName: q.org.Name,
		Link: s.cfg.Issuer + "/account/security", Now: now}.Message()
	if err == nil {
		err = s.cfg.Mailer.Send(ctx, s.cfg.MailFrom, []string{u.Email}, msg)
	}
	if err != nil {
		s.log.Error("sending an MFA reminder", "org", q.org.ID, "user", userID, "err", err)
		// Not sent, so not throttled: the next attempt may go through.
		_ = s.store.Delete(ctx, reminderGuardNS, key)
		return "delivery_failed", nil
	}
	s.metrics.reminders.Inc()
	return "", s.store.Put(ctx, remindedNS, key, []byte(now.Format(time.RFC3339)), 0)
}

func dedupe(ids []string) []string {
	var out []string
	for _, id := range ids {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

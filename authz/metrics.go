package authz

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepup-dev/stepup/authz/step"
)

// metrics are the server's Prometheus counters. Every label takes values
// from a small fixed set (grant types, amr combinations, configured
// organizations), so no request can grow the series without bound.
type metrics struct {
	tokens       *prometheus.CounterVec
	logins       *prometheus.CounterVec
	stepUps      *prometheus.CounterVec
	totpFailures *prometheus.CounterVec
	certificates prometheus.Counter
	reminders    prometheus.Counter
	storeErrors  prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepup_tokens_issued_total",
			Help: "Token responses issued at the token endpoint, by grant type.",
		}, []string{"grant"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepup_logins_total",
			Help: "Authorizations completed after the person logged in or stepped up, by the amr of the session (space-separated, sorted).",
		}, []string{"amr"}),
		stepUps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepup_step_ups_total",
			Help: "Authorizations of a logged-in person that had to ask for more, by what was asked: otp, mfa_setup, sso, reauthenticate (max_age or prompt=login).",
		}, []string{"reason"}),
		totpFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepup_totp_failures_total",
			Help: "Second-factor codes refused, by reason: wrong, replayed, throttled.",
		}, []string{"reason"}),
		certificates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stepup_ssh_certificates_issued_total",
			Help: "SSH user certificates signed.",
		}),
		reminders: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stepup_mfa_reminders_sent_total",
			Help: "MFA reminder emails handed to the mail relay.",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stepup_store_errors_total",
			Help: "Requests answered 503 because the store could not be reached.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer, adoption prometheus.Collector) error {
	for _, c := range []prometheus.Collector{m.tokens, m.logins, m.stepUps, m.totpFailures,
		m.certificates, m.reminders, m.storeErrors, adoption} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func amrLabel(amr []string) string {
	amr = slices.Clone(amr)
	slices.Sort(amr)
	return strings.Join(amr, " ")
}

// stepUpReason names what a step-up asks for.
func stepUpReason(st step.Step) string {
	switch st.Kind {
	case step.Code:
		return "otp"
	case step.Enroll:
		return "mfa_setup"
	case step.Password:
		return "reauthenticate"
	case step.SSO:
		return "sso"
	}
	return "other"
}

// mfaAdoption reports, per organization, how many members there are and how
// many have MFA. Counting reads every member's enrollment from the store,
// so a result is reused for adoptionTTL: scrapes every few seconds cost the
// store nothing extra, and adoption changes slowly.
type mfaAdoption struct {
	srv *Server

	mu      sync.Mutex
	at      time.Time
	members map[string][2]int // org id → {members, with MFA}

	total, enabled *prometheus.Desc
}

const adoptionTTL = time.Minute

func newMFAAdoption(s *Server) *mfaAdoption {
	return &mfaAdoption{
		srv:     s,
		total:   prometheus.NewDesc("stepup_org_members", "Members of the organization.", []string{"org"}, nil),
		enabled: prometheus.NewDesc("stepup_org_members_with_mfa", "Members of the organization with MFA turned on.", []string{"org"}, nil),
	}
}

func (a *mfaAdoption) Describe(ch chan<- *prometheus.Desc) {
	ch <- a.total
	ch <- a.enabled
}

func (a *mfaAdoption) Collect(ch chan<- prometheus.Metric) {
	counts := a.counts()
	for _, id := range slices.Sorted(maps.Keys(counts)) {
		c := counts[id]
		ch <- prometheus.MustNewConstMetric(a.total, prometheus.GaugeValue, float64(c[0]), id)
		ch <- prometheus.MustNewConstMetric(a.enabled, prometheus.GaugeValue, float64(c[1]), id)
	}
}

// counts returns the cached figures, recounting when they are stale. An
// organization whose members cannot be read is left out of this scrape
// (and counted as a store error) rather than reported as zero.
func (a *mfaAdoption) counts() map[string][2]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.members != nil && a.srv.cfg.Now().Sub(a.at) < adoptionTTL {
		return a.members
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string][2]int{}
	complete := true
	if err := a.srv.people.seed(ctx); err != nil && isUnavailable(err) {
		a.srv.metrics.storeErrors.Inc()
		return out
	}
	// The organizations of the config: a label per organization made at
	// run time would grow without bound.
	for _, o := range a.srv.cfg.Orgs {
		members, err := a.srv.allMembers(ctx, o.ID)
		if err != nil {
			a.srv.metrics.storeErrors.Inc()
			complete = false
			continue
		}
		c, ok := [2]int{len(members), 0}, true
		ids := make([]string, len(members))
		for i, m := range members {
			ids[i] = m.User.ID
		}
		enrolled, err := a.srv.store.GetMany(ctx, mfaNS, ids...)
		if err != nil {
			a.srv.metrics.storeErrors.Inc()
			ok = false
		}
		for _, e := range enrolled {
			if e != nil {
				c[1]++
			}
		}
		if ok {
			out[o.ID] = c
		}
		complete = complete && ok
	}
	if complete {
		a.members, a.at = out, a.srv.cfg.Now()
	}
	return out
}

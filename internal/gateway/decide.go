package gateway

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/internal/gateway/revoked"
	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/verify"
)

// Kind is what the gateway decided about one attempt.
type Kind uint8

const (
	// Allow: the person may use the service.
	Allow Kind = iota + 1
	// NoAccess: not a member of the service's organization, or no such
	// service; the two read alike, so that outsiders learn nothing.
	NoAccess
	// Missing: a member whose authentication is not enough; Decision.Missing
	// says what more is required.
	Missing
	// Revoked: the server revoked the certificate.
	Revoked
	// Unavailable: no answer could be had; Decision.Down says what from.
	Unavailable
)

func (k Kind) String() string {
	switch k {
	case Allow:
		return "allow"
	case NoAccess:
		return "no access"
	case Missing:
		return "missing"
	case Revoked:
		return "revoked"
	case Unavailable:
		return "unavailable"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Down is what an Unavailable decision could not have.
type Down uint8

const (
	// AccessDown: the server's access API did not answer.
	AccessDown Down = iota + 1
	// RevocationsDown: the revocation list is older than its bound, so
	// no certificate can be told from a revoked one.
	RevocationsDown
)

// Attempt is who wants to use what.
type Attempt struct {
	// Service is the SSH login name or the HTTP API's service; "" where
	// Org is given instead (the principals helper has no service).
	Service string
	// Org is the organization whose policy applies; Decide sets it from
	// Policy.Services when Service is given.
	Org              string
	Username, UserID string
	AMR              []string
	AuthTime         int64 // Unix seconds; 0: unknown, as old as can be
	// Serial is the certificate's; Certificate says there is one (an
	// HTTP request carries a token instead, which no list revokes).
	Serial      uint64
	Certificate bool
}

// Decision is the one answer for an attempt, rendered by SSHText for the
// person's terminal, by HelperLog for the sshd principals helper's log
// line and by WriteHTTP for the HTTP API.
type Decision struct {
	Kind Kind
	Attempt
	// Missing is what the organization requires beyond the attempt's
	// authentication (Kind Missing).
	Missing tokens.Requirements
	// Down and Err say what could not be had and why (Kind Unavailable);
	// Err is for the log only.
	Down Down
	Err  error
}

// AccessLookup is the one thing Decide needs from the access client.
type AccessLookup interface {
	Lookup(ctx context.Context, org, userID string) (access.Answer, error)
}

// RevocationStatus is what Decide needs from the revocation list.
type RevocationStatus interface {
	Status(serial uint64) (revoked.Status, error)
}

var (
	_ AccessLookup     = (*access.Client)(nil)
	_ RevocationStatus = (*revoked.Cache)(nil)
)

// Policy is what Decide consults.
type Policy struct {
	// Services maps services to their organizations.
	Services map[string]string
	Access   AccessLookup
	// Revocations is consulted for certificates; nil consults none.
	Revocations RevocationStatus
	Now         func() time.Time
}

// Decide says whether the attempt may go ahead. The revocation list comes
// first (it needs no call to the server), then the service, then the
// organization's answer and policy (tokens.Missing).
func Decide(ctx context.Context, p Policy, a Attempt) Decision {
	if d, done := decideRevocation(p.Revocations, a); done {
		return d
	}
	d := Decision{Attempt: a}
	if a.Service != "" {
		org, ok := p.Services[a.Service]
		if !ok {
			d.Kind = NoAccess
			return d
		}
		d.Org = org
	}
	ans, err := p.Access.Lookup(ctx, d.Org, a.UserID)
	if err != nil {
		d.Kind, d.Down, d.Err = Unavailable, AccessDown, err
		return d
	}
	if !ans.Member {
		d.Kind = NoAccess
		return d
	}
	var authTime time.Time
	if a.AuthTime > 0 {
		authTime = time.Unix(a.AuthTime, 0)
	}
	if d.Missing = tokens.Missing(ans.Requirements, a.AMR, authTime, p.Now()); !d.Missing.Satisfied() {
		d.Kind = Missing
		return d
	}
	d.Kind = Allow
	return d
}

// decideRevocation is the part of Decide the revocation list answers, on
// its own where a certificate is being authenticated: done when the
// certificate is revoked or the list too old to tell.
func decideRevocation(r RevocationStatus, a Attempt) (d Decision, done bool) {
	d = Decision{Attempt: a}
	if !a.Certificate || r == nil {
		return d, false
	}
	switch st, err := r.Status(a.Serial); st {
	case revoked.Good:
		return d, false
	case revoked.Revoked:
		d.Kind = Revoked
	default:
		d.Kind, d.Down, d.Err = Unavailable, RevocationsDown, err
	}
	return d, true
}

// The texts a person reads when the server or the list cannot be had.
// They name no cause: the details are in the gateway's log.
const (
	unavailableText = "Error: The access service is unavailable; try again shortly.\n"
	staleListText   = "Error: The gateway cannot check whether certificates have been revoked, so it lets no one in for now; try again shortly.\n"
)

// SSHText is what the person's terminal shows: on standard error at the
// start of a session, or as the authentication banner when the
// certificate is refused outright. "" for Allow.
func (d Decision) SSHText() string {
	switch d.Kind {
	case NoAccess:
		return tokens.SSHNoAccess(d.Service, d.Username, d.UserID)
	case Missing:
		return d.Missing.SSHDenied(d.Service, d.Username, d.UserID)
	case Revoked:
		return tokens.SSHRevoked(d.Service, d.Username, d.UserID)
	case Unavailable:
		if d.Down == RevocationsDown {
			return staleListText
		}
		return unavailableText
	}
	return ""
}

// HelperLog is the principals helper's line for the certificate named by
// what; "" for Allow, which it answers by printing the principal.
func (d Decision) HelperLog(what string) string {
	switch d.Kind {
	case NoAccess:
		if d.Org == "" {
			return fmt.Sprintf("refused %s: there is no service %q", what, d.Service)
		}
		return fmt.Sprintf("refused %s: %q is not a member of organization %q", what, d.UserID, d.Org)
	case Missing:
		return fmt.Sprintf("refused %s: organization %q requires more authentication: %s", what, d.Org, d.Missing.Describe("; "))
	case Revoked:
		return fmt.Sprintf("refused %s: it has been revoked", what)
	case Unavailable:
		return fmt.Sprintf("no answer for %s: %v", what, d.Err)
	}
	return ""
}

// The gateway HTTP API's error bodies, beside those of package verify.
var (
	// notFound is the same for an unknown service and a non-member: whether
	// a service exists is not for outsiders to learn.
	notFound = apiError{Error: "not_found", Description: "The service doesn't exist or you do not have access to it."}
	// unavailable names no cause, as unavailableText does for SSH.
	unavailable = apiError{Error: verify.ErrorUnavailable, Description: "The access service is unavailable; try again shortly."}
	revokedBody = apiError{Error: "invalid_token", Description: "This credential has been revoked: log in again."}
)

type apiError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// project is the answer to GET /projects/{service} when the token is enough.
type project struct {
	Service string `json:"service"`
	Org     string `json:"org"`
}

// WriteHTTP is the HTTP API's answer: the project for Allow, 404 for
// NoAccess, the step-up challenge for Missing, 401 invalid_token for
// Revoked, 503 for Unavailable.
func (d Decision) WriteHTTP(w http.ResponseWriter) {
	switch d.Kind {
	case Allow:
		writeJSON(w, http.StatusOK, project{Service: d.Service, Org: d.Org})
	case NoAccess:
		writeJSON(w, http.StatusNotFound, notFound)
	case Missing:
		verify.Challenge(w, d.Missing)
	case Revoked:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+revokedBody.Description+`"`)
		writeJSON(w, http.StatusUnauthorized, revokedBody)
	default:
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, unavailable)
	}
}

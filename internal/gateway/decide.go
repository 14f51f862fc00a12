package gateway

import (
	"context"
	"time"

	"github.com/stepup-dev/stepup/internal/gateway/access"
	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// unavailableText is what a person sees when the server cannot be asked.
// It names no cause: the details are in the gateway's log.
const unavailableText = "Error: The access service is unavailable; try again shortly.\n"

// identity is who a verified certificate says is connecting.
type identity struct {
	Username string // the certificate's first principal
	UserID   string // its KeyId
	Claims   sshca.Claims
	TokenID  string
}

// accessLookup is the one thing decide needs from the access client.
type accessLookup interface {
	Lookup(ctx context.Context, org, userID string) (access.Answer, error)
}

var _ accessLookup = (*access.Client)(nil)

// decide says whether id may use service at now. It returns "" to allow,
// or the text to show the person; err is set only when the server could
// not be asked, and then the text is unavailableText.
func decide(ctx context.Context, lookup accessLookup, services map[string]string, service string, id identity, now time.Time) (string, error) {
	org, ok := services[service]
	if !ok {
		// Same words as for a non-member: whether a service exists is not
		// for outsiders to learn.
		return tokens.SSHNoAccess(service, id.Username, id.UserID), nil
	}
	ans, err := lookup.Lookup(ctx, org, id.UserID)
	if err != nil {
		return unavailableText, err
	}
	if !ans.Member {
		return tokens.SSHNoAccess(service, id.Username, id.UserID), nil
	}
	var authTime time.Time
	if id.Claims.AuthTime > 0 {
		authTime = time.Unix(id.Claims.AuthTime, 0)
	}
	missing := tokens.Missing(ans.Requirements, id.Claims.AMR, authTime, now)
	if !missing.Satisfied() {
		return missing.SSHDenied(service, id.Username, id.UserID), nil
	}
	return "", nil
}

package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/tokens"
)

// A removed passkey stops counting in the logins that proved it: a lost or
// stolen key is removed so that what it signed in ends. Logins do not keep
// which key they used, so removing any of a person's passkeys starts a new
// key epoch, and a key proved before it no longer counts anywhere, as an
// otp proved before MFA was turned off does not: in browser sessions (the
// factor is dropped, and the next step-up asks for a key again), in access
// and refresh tokens (refused), in API tokens (the key's methods are
// dropped), and in SSH certificates (revoked, and none issued for those
// logins again).
const passkeyEpochNS = "passkey-epoch"

// keyStillValid reports whether a key proved at the given time still
// counts for userID.
func (p *passkeys) keyStillValid(ctx context.Context, userID string, at time.Time) (bool, error) {
	data, err := p.kv.Get(ctx, passkeyEpochNS, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var epoch time.Time
	if err := epoch.UnmarshalText(data); err != nil {
		return false, fmt.Errorf("passkey epoch of %s: %w", userID, err)
	}
	return !at.Before(epoch), nil
}

// newKeyEpoch ends every key factor userID proved before now.
func (p *passkeys) newKeyEpoch(ctx context.Context, userID string, now time.Time) error {
	b, _ := now.UTC().MarshalText()
	return p.kv.Put(ctx, passkeyEpochNS, userID, b, 0)
}

// provedKey reports whether amr says a passkey took part.
func provedKey(amr []string) bool { return slices.ContainsFunc(amr, tokens.IsKey) }

// withoutKey is amr with what a key added taken out, and mfa and phr
// derived again from what is left.
func withoutKey(amr []string) []string {
	kept := slices.DeleteFunc(slices.Clone(amr), func(m string) bool {
		return tokens.IsKey(m) || m == tokens.MethodUser || m == tokens.MethodMFA || m == tokens.MethodPhishingResistant
	})
	return tokens.AMR(kept, false)
}

package directory

import (
	"context"
	"errors"
	"fmt"
)

// SeedOrgSpec is an organization as the config describes it.
type SeedOrgSpec struct {
	Org     Org
	Members []Membership // OrgID is the member's user id
}

// Seed adds the people and organizations of the config that the store
// does not have yet, and leaves alone every one it has: a restart, or a
// second replica seeding at the same time, never duplicates anything nor
// undoes a change made at run time (a role, a removed member, a new
// password). A seeded username or email that someone else took at run time
// is reported and that person skipped.
func (d *Directory) Seed(ctx context.Context, users []User, orgs []SeedOrgSpec) error {
	var problems []error
	for _, u := range users {
		err := d.CreateUser(ctx, u)
		switch {
		case err == nil, errors.Is(err, ErrIDTaken):
		case errors.Is(err, ErrUsernameTaken), errors.Is(err, ErrEmailTaken):
			problems = append(problems, fmt.Errorf("seed user %s: %w by another person", u.ID, err))
		default:
			return err
		}
	}
	for _, o := range orgs {
		err := d.SeedOrg(ctx, o.Org, o.Members)
		switch {
		case err == nil, errors.Is(err, ErrIDTaken):
		case errors.Is(err, ErrNotFound):
			problems = append(problems, fmt.Errorf("seed org %s: a member does not exist", o.Org.ID))
		default:
			return err
		}
	}
	return errors.Join(problems...)
}

// Package directory is who exists: people, organizations and who belongs
// to which, with their roles. It lives in the store (storage.Records), so
// that every replica sees a change at once; the config only seeds it.
//
// Everything is one storage group: creating a person checks and claims the
// username and the email in the same atomic step as the record, on every
// backend, a Redis Cluster included (one hash tag). Reads cost the same
// whatever the directory's size: a login reads an index entry and the
// record it names (one round trip), a page of members reads an index range
// and one batch of records.
package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stepup-dev/stepup/authz/storage"
)

// What callers test with errors.Is. Each is a 4xx a person can act on.
var (
	ErrNotFound      = errors.New("directory: not found")
	ErrUsernameTaken = errors.New("directory: the username is taken")
	ErrEmailTaken    = errors.New("directory: the email address is in use")
	ErrIDTaken       = errors.New("directory: the id is taken")
	ErrMember        = errors.New("directory: already a member")
	ErrNotMember     = errors.New("directory: not a member")
	// ErrLastOwner: the change would leave an organization without an
	// owner.
	ErrLastOwner = errors.New("directory: an organization keeps at least one owner")
	ErrBadRole   = errors.New("directory: the role must be owner, admin or member")
)

// Roles, from most to least able.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// ValidRole reports whether r is one of the three roles.
func ValidRole(r string) bool { return r == RoleOwner || r == RoleAdmin || r == RoleMember }

// User is a person who can log in.
type User struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Email    string `json:"email,omitempty"`
	Name     string `json:"name,omitempty"`
	// PasswordHash is an argon2id string; empty for a person who signs in
	// through SSO only.
	PasswordHash  string    `json:"password_hash,omitempty"`
	EmailVerified bool      `json:"email_verified,omitempty"`
	Disabled      bool      `json:"disabled,omitempty"`
	Created       time.Time `json:"created"`
	// SignedOutAt ends every login that began before it: set when the
	// password changes, so that other sessions and refresh families stop.
	SignedOutAt time.Time `json:"signed_out_at,omitzero"`
}

// LoggedInBefore reports whether a login that began at t was ended by a
// password change (or a sign-out everywhere) since.
func (u *User) LoggedInBefore(t time.Time) bool {
	return !u.SignedOutAt.IsZero() && t.Before(u.SignedOutAt)
}

// Org is an organization and what it demands of its members'
// authentication.
type Org struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	MFARequired bool   `json:"mfa_required,omitempty"`
	// PhishingResistant requires MFA with a passkey or security key.
	PhishingResistant bool      `json:"phishing_resistant,omitempty"`
	SSOProvider       string    `json:"sso_provider,omitempty"`
	Created           time.Time `json:"created"`
}

// Member is a person in an organization.
type Member struct {
	User User
	Role string
}

// Membership is one of a person's organizations.
type Membership struct {
	OrgID, Role string
}

// group holds the whole directory; see the package comment.
const group = "directory"

// Record and index names within the group. Lower-cased keys make
// usernames and emails unique regardless of case.
func userRec(id string) string       { return "user:" + id }
func usernameRec(name string) string { return "username:" + strings.ToLower(name) }
func emailRec(email string) string   { return "email:" + strings.ToLower(email) }
func orgRec(id string) string        { return "org:" + id }
func roleRec(org, user string) string {
	return "role:" + org + "\x00" + user
}
func membersIndex(org string) string { return "members:" + org }
func orgsIndex(user string) string   { return "orgs:" + user }

// usersIndex lists every person, for instance administrators.
const usersIndex = "users"

func ownersIndex(org string) string { return "owners:" + org }

// Directory reads and changes the directory in a store.
type Directory struct {
	rec storage.Records
	now func() time.Time
}

// New returns the directory kept in rec.
func New(rec storage.Records, now func() time.Time) *Directory {
	if now == nil {
		now = time.Now
	}
	return &Directory{rec: rec, now: now}
}

func (d *Directory) one(ctx context.Context, name string) ([]byte, error) {
	vals, err := d.rec.GetRecords(ctx, group, name)
	if err != nil {
		return nil, err
	}
	if vals[0] == nil {
		return nil, ErrNotFound
	}
	return vals[0], nil
}

func decode[T any](data []byte) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("directory: a damaged record: %w", err)
	}
	return v, nil
}

// User returns the person with this id.
func (d *Directory) User(ctx context.Context, id string) (*User, error) {
	data, err := d.one(ctx, userRec(id))
	if err != nil {
		return nil, err
	}
	return decode[User](data)
}

// Users returns the people with these ids, nil for those that do not
// exist, in one round trip.
func (d *Directory) Users(ctx context.Context, ids ...string) ([]*User, error) {
	return many[User](ctx, d, userRec, ids)
}

// many reads the records of ids in one round trip, nil where there is none.
func many[T any](ctx context.Context, d *Directory, rec func(string) string, ids []string) ([]*T, error) {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = rec(id)
	}
	vals, err := d.rec.GetRecords(ctx, group, names...)
	if err != nil {
		return nil, err
	}
	out := make([]*T, len(ids))
	for i, v := range vals {
		if v != nil {
			if out[i], err = decode[T](v); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// ByUsername returns the person with this username, in any case, in one
// round trip: a login waits for it.
func (d *Directory) ByUsername(ctx context.Context, username string) (*User, error) {
	return d.via(ctx, usernameRec(username))
}

// ByEmail returns the person with this email address, in any case.
func (d *Directory) ByEmail(ctx context.Context, email string) (*User, error) {
	return d.via(ctx, emailRec(email))
}

// via is the person a claim (a username or email entry) names.
func (d *Directory) via(ctx context.Context, claim string) (*User, error) {
	_, data, err := d.rec.Follow(ctx, group, claim, userRec(""))
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, ErrNotFound
	}
	return decode[User](data)
}

// CreateUser adds u, claiming its id, username and email in one step:
// ErrIDTaken, ErrUsernameTaken or ErrEmailTaken, and nothing written, if
// one is in use.
func (d *Directory) CreateUser(ctx context.Context, u User) error {
	if u.Created.IsZero() {
		u.Created = d.now().UTC()
	}
	data, err := json.Marshal(u)
	if err != nil {
		return err
	}
	ops := []storage.RecordOp{
		storage.Insert(userRec(u.ID), data),
		storage.Insert(usernameRec(u.Username), []byte(u.ID)),
		storage.AddToIndex(usersIndex, u.ID),
	}
	if u.Email != "" {
		ops = append(ops, storage.Insert(emailRec(u.Email), []byte(u.ID)))
	}
	return taken(d.rec.ApplyRecords(ctx, group, ops...))
}

// taken names which claim failed.
func taken(err error) error {
	var re *storage.RecordError
	if !errors.As(err, &re) || !errors.Is(err, storage.ErrAlreadyExists) {
		return err
	}
	switch {
	case strings.HasPrefix(re.Name, "username:"):
		return ErrUsernameTaken
	case strings.HasPrefix(re.Name, "email:"):
		return ErrEmailTaken
	default:
		return ErrIDTaken
	}
}

// maxRetries bounds a read-modify-write that keeps losing to concurrent
// changes of the same record.
const maxRetries = 20

var errContended = errors.New("directory: the record changes too often to update; try again")

// UpdateUser changes the person with id through fn, which may change
// anything but the id; a new username or email is claimed (and the old one
// freed) in the same step. fn may run more than once.
func (d *Directory) UpdateUser(ctx context.Context, id string, fn func(*User) error) (*User, error) {
	for range maxRetries {
		old, err := d.one(ctx, userRec(id))
		if err != nil {
			return nil, err
		}
		before, err := decode[User](old)
		if err != nil {
			return nil, err
		}
		u := *before
		if err := fn(&u); err != nil {
			return nil, err
		}
		u.ID = id
		data, err := json.Marshal(u)
		if err != nil {
			return nil, err
		}
		ops := []storage.RecordOp{storage.Expect(userRec(id), old), storage.Set(userRec(id), data)}
		if !strings.EqualFold(u.Username, before.Username) {
			ops = append(ops, storage.Insert(usernameRec(u.Username), []byte(id)), storage.Remove(usernameRec(before.Username)))
		} else if u.Username != before.Username {
			ops = append(ops, storage.Set(usernameRec(u.Username), []byte(id)))
		}
		if !strings.EqualFold(u.Email, before.Email) {
			if u.Email != "" {
				ops = append(ops, storage.Insert(emailRec(u.Email), []byte(id)))
			}
			if before.Email != "" {
				ops = append(ops, storage.Remove(emailRec(before.Email)))
			}
		}
		err = d.rec.ApplyRecords(ctx, group, ops...)
		var re *storage.RecordError
		if errors.As(err, &re) && re.Name == userRec(id) {
			if errors.Is(err, storage.ErrNotFound) {
				return nil, ErrNotFound
			}
			continue // changed meanwhile: read it again
		}
		if err != nil {
			return nil, taken(err)
		}
		return &u, nil
	}
	return nil, errContended
}

// Org returns the organization with this id.
func (d *Directory) Org(ctx context.Context, id string) (*Org, error) {
	data, err := d.one(ctx, orgRec(id))
	if err != nil {
		return nil, err
	}
	return decode[Org](data)
}

// Orgs returns the organizations with these ids, nil for those that do
// not exist, in one round trip.
func (d *Directory) Orgs(ctx context.Context, ids ...string) ([]*Org, error) {
	return many[Org](ctx, d, orgRec, ids)
}

// CreateOrg adds o with owner as its first owner, in one step; ErrIDTaken
// if the id is in use, ErrNotFound if the owner does not exist.
func (d *Directory) CreateOrg(ctx context.Context, o Org, owner string) error {
	return d.SeedOrg(ctx, o, []Membership{{OrgID: owner, Role: RoleOwner}})
}

// SeedOrg adds o with its members (OrgID naming the member's user id
// here) in one step: all of it or, if the id is in use (ErrIDTaken) or a
// member does not exist (ErrNotFound), nothing.
func (d *Directory) SeedOrg(ctx context.Context, o Org, members []Membership) error {
	if o.Created.IsZero() {
		o.Created = d.now().UTC()
	}
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	for range maxRetries {
		names := make([]string, len(members))
		for i, m := range members {
			if !ValidRole(m.Role) {
				return ErrBadRole
			}
			names[i] = userRec(m.OrgID)
		}
		users, err := d.rec.GetRecords(ctx, group, names...)
		if err != nil {
			return err
		}
		ops := []storage.RecordOp{storage.Insert(orgRec(o.ID), data)}
		for i, m := range members {
			if users[i] == nil {
				return ErrNotFound
			}
			ops = append(ops,
				storage.Expect(userRec(m.OrgID), users[i]), // not deleted meanwhile
				storage.Set(roleRec(o.ID, m.OrgID), []byte(m.Role)),
				storage.AddToIndex(membersIndex(o.ID), m.OrgID),
				storage.AddToIndex(orgsIndex(m.OrgID), o.ID))
			if m.Role == RoleOwner {
				ops = append(ops, storage.AddToIndex(ownersIndex(o.ID), m.OrgID))
			}
		}
		err = d.rec.ApplyRecords(ctx, group, ops...)
		var re *storage.RecordError
		switch {
		case errors.As(err, &re) && re.Name == orgRec(o.ID):
			return ErrIDTaken
		case errors.As(err, &re):
			continue // a member changed meanwhile
		}
		return err
	}
	return errContended
}

// UpdateOrg changes the organization with id through fn (not its id); fn
// may run more than once.
func (d *Directory) UpdateOrg(ctx context.Context, id string, fn func(*Org) error) (*Org, error) {
	for range maxRetries {
		old, err := d.one(ctx, orgRec(id))
		if err != nil {
			return nil, err
		}
		o, err := decode[Org](old)
		if err != nil {
			return nil, err
		}
		if err := fn(o); err != nil {
			return nil, err
		}
		o.ID = id
		data, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		err = d.rec.ApplyRecords(ctx, group, storage.Expect(orgRec(id), old), storage.Set(orgRec(id), data))
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return nil, ErrNotFound
		case errors.Is(err, storage.ErrAlreadyExists):
			continue
		case err != nil:
			return nil, err
		}
		return o, nil
	}
	return nil, errContended
}

// Role is the person's role in the organization; ErrNotMember if none
// (also when the organization does not exist).
func (d *Directory) Role(ctx context.Context, org, user string) (string, error) {
	role, err := d.one(ctx, roleRec(org, user))
	if errors.Is(err, ErrNotFound) {
		return "", ErrNotMember
	}
	return string(role), err
}

// AddMember makes user a member of org with role; ErrMember if they are
// one already, ErrNotFound if either does not exist.
func (d *Directory) AddMember(ctx context.Context, org, user, role string) error {
	if !ValidRole(role) {
		return ErrBadRole
	}
	for range maxRetries {
		vals, err := d.rec.GetRecords(ctx, group, orgRec(org), userRec(user))
		if err != nil {
			return err
		}
		if vals[0] == nil || vals[1] == nil {
			return ErrNotFound
		}
		ops := []storage.RecordOp{
			storage.Expect(orgRec(org), vals[0]), storage.Expect(userRec(user), vals[1]),
			storage.Insert(roleRec(org, user), []byte(role)),
			storage.AddToIndex(membersIndex(org), user),
			storage.AddToIndex(orgsIndex(user), org),
		}
		if role == RoleOwner {
			ops = append(ops, storage.AddToIndex(ownersIndex(org), user))
		}
		err = d.rec.ApplyRecords(ctx, group, ops...)
		var re *storage.RecordError
		switch {
		case errors.As(err, &re) && re.Name == roleRec(org, user):
			return ErrMember
		case errors.As(err, &re):
			continue // the org or user changed meanwhile
		}
		return err
	}
	return errContended
}

// SetRole changes a member's role. Demoting the last owner is
// ErrLastOwner.
func (d *Directory) SetRole(ctx context.Context, org, user, role string) error {
	if !ValidRole(role) {
		return ErrBadRole
	}
	return d.changeMember(ctx, org, user, func(old string) []storage.RecordOp {
		ops := []storage.RecordOp{storage.Set(roleRec(org, user), []byte(role))}
		switch {
		case role == RoleOwner:
			ops = append(ops, storage.AddToIndex(ownersIndex(org), user))
		case old == RoleOwner:
			ops = append(ops, storage.RemoveFromIndex(ownersIndex(org), user))
		}
		return ops
	}, role != RoleOwner)
}

// RemoveMember takes user out of org. Removing the last owner is
// ErrLastOwner.
func (d *Directory) RemoveMember(ctx context.Context, org, user string) error {
	return d.changeMember(ctx, org, user, func(string) []storage.RecordOp {
		return []storage.RecordOp{
			storage.Remove(roleRec(org, user)),
			storage.RemoveFromIndex(membersIndex(org), user),
			storage.RemoveFromIndex(orgsIndex(user), org),
			storage.RemoveFromIndex(ownersIndex(org), user),
		}
	}, true)
}

// changeMember applies ops to a member, guarded by the role it read. When
// leavesOwners, an owner may change only while another owner remains:
// the batch also expects another owner's role record to be unchanged, so
// two owners demoting each other at once cannot both succeed.
func (d *Directory) changeMember(ctx context.Context, org, user string, ops func(old string) []storage.RecordOp, leavesOwners bool) error {
	for range maxRetries {
		old, err := d.Role(ctx, org, user)
		if err != nil {
			return err
		}
		guard := []storage.RecordOp{storage.Expect(roleRec(org, user), []byte(old))}
		if leavesOwners && old == RoleOwner {
			other, err := d.otherOwner(ctx, org, user)
			if err != nil {
				return err
			}
			guard = append(guard, storage.Expect(roleRec(org, other), []byte(RoleOwner)))
		}
		err = d.rec.ApplyRecords(ctx, group, append(guard, ops(old)...)...)
		var re *storage.RecordError
		switch {
		case errors.As(err, &re):
			continue // a role changed meanwhile: look again
		case err != nil:
			return err
		}
		return nil
	}
	return errContended
}

// otherOwner is an owner of org other than user, or ErrLastOwner.
func (d *Directory) otherOwner(ctx context.Context, org, user string) (string, error) {
	owners, err := d.rec.ScanIndex(ctx, group, ownersIndex(org), "", 2)
	if err != nil {
		return "", err
	}
	for _, o := range owners {
		if o != user {
			return o, nil
		}
	}
	return "", ErrLastOwner
}

// Members returns up to limit members of org after the member with id
// after ("" for the first page), ordered by id, in two round trips
// whatever the organization's size.
func (d *Directory) Members(ctx context.Context, org, after string, limit int) ([]Member, error) {
	ids, err := d.rec.ScanIndex(ctx, group, membersIndex(org), after, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	names := make([]string, 0, 2*len(ids))
	for _, id := range ids {
		names = append(names, userRec(id), roleRec(org, id))
	}
	vals, err := d.rec.GetRecords(ctx, group, names...)
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(ids))
	for i := range ids {
		u, role := vals[2*i], vals[2*i+1]
		if u == nil || role == nil {
			continue // removed between the two reads
		}
		user, err := decode[User](u)
		if err != nil {
			return nil, err
		}
		out = append(out, Member{User: *user, Role: string(role)})
	}
	return out, nil
}

// MemberCount is how many members org has.
func (d *Directory) MemberCount(ctx context.Context, org string) (int64, error) {
	return d.rec.IndexSize(ctx, group, membersIndex(org))
}

// ListUsers returns up to limit people after the one with id after (""
// for the first page), ordered by id.
func (d *Directory) ListUsers(ctx context.Context, after string, limit int) ([]*User, error) {
	ids, err := d.rec.ScanIndex(ctx, group, usersIndex, after, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	users, err := d.Users(ctx, ids...)
	if err != nil {
		return nil, err
	}
	out := users[:0]
	for _, u := range users {
		if u != nil {
			out = append(out, u)
		}
	}
	return out, nil
}

// maxOrgsPerUser bounds what OrgsOf reads; a person in more organizations
// than this is not a case the pages are made for.
const maxOrgsPerUser = 1000

// OrgsOf returns the person's organizations and roles, ordered by id.
func (d *Directory) OrgsOf(ctx context.Context, user string) ([]Membership, error) {
	ids, err := d.rec.ScanIndex(ctx, group, orgsIndex(user), "", maxOrgsPerUser)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = roleRec(id, user)
	}
	vals, err := d.rec.GetRecords(ctx, group, names...)
	if err != nil {
		return nil, err
	}
	out := make([]Membership, 0, len(ids))
	for i, v := range vals {
		if v != nil {
			out = append(out, Membership{OrgID: ids[i], Role: string(v)})
		}
	}
	return out, nil
}

package authz

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
)

// User is a person who can log in; the directory keeps them.
type User = directory.User

// people is the directory in the store, seeded from the config before the
// first request that needs it. Seeding waits for a request rather than
// happening in New, so that a replica can start while Redis is still
// coming up; until it succeeds, requests get 503.
type people struct {
	*directory.Directory
	users []User
	orgs  []Org
	kv    storage.KV
	// dummy is checked when the username is unknown, so that a wrong
	// username costs as much time as a wrong password.
	dummy string

	seeded atomic.Bool
	mu     sync.Mutex
}

// seed adds what the config names and the store lacks; see
// directory.Seed. An organization's security settings changed at run time
// before the directory existed (kept under org-security) carry over.
func (p *people) seed(ctx context.Context) error {
	if p.seeded.Load() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seeded.Load() {
		return nil
	}
	specs := make([]directory.SeedOrgSpec, 0, len(p.orgs))
	for _, o := range p.orgs {
		spec := directory.SeedOrgSpec{Org: directory.Org{ID: o.ID, Name: o.Name, MFARequired: o.MFARequired,
			PhishingResistant: o.PhishingResistant, SSOProvider: o.SSOProvider}}
		if data, err := p.kv.Get(ctx, orgSecurityNS, o.ID); err == nil {
			var sec orgSecurity
			if json.Unmarshal(data, &sec) == nil {
				spec.Org.MFARequired, spec.Org.SSOProvider = sec.MFARequired, sec.SSOProvider
			}
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		for _, m := range o.Members {
			spec.Members = append(spec.Members, directory.Membership{OrgID: m.UserID, Role: m.Role})
		}
		specs = append(specs, spec)
	}
	err := p.Seed(ctx, p.users, specs)
	if isUnavailable(err) {
		return err
	}
	// A seed that conflicts with the store is the operator's to resolve;
	// the server runs with what the store has.
	p.seeded.Store(true)
	return err
}

// withPeople answers 503 while the directory cannot be seeded.
func (s *Server) withPeople(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.people.seeded.Load() {
			if err := s.people.seed(r.Context()); err != nil {
				if isUnavailable(err) {
					s.unavailable(w, err)
					return
				}
				s.log.Error("seeding the directory from the config", "err", err)
			}
		}
		h.ServeHTTP(w, r)
	})
}

// user is the person with id, or nil if there is none or they are
// disabled.
func (s *Server) user(ctx context.Context, id string) (*User, error) {
	u, err := s.people.User(ctx, id)
	if errors.Is(err, directory.ErrNotFound) || (err == nil && u.Disabled) {
		return nil, nil
	}
	return u, err
}

// sessionUser is the person of a session: the one its read found, else
// read now; nil if there is none or they are disabled.
func (s *Server) sessionUser(ctx context.Context, ls *LoginSession) (*User, error) {
	if ls.person != nil {
		return ls.person, nil
	}
	return s.user(ctx, ls.UserID)
}

// userByEmail is the person with email, or nil.
func (s *Server) userByEmail(ctx context.Context, email string) (*User, error) {
	u, err := s.people.ByEmail(ctx, email)
	if errors.Is(err, directory.ErrNotFound) || (err == nil && u.Disabled) {
		return nil, nil
	}
	return u, err
}

// loginAccount is the account a sign-in names, disabled or not; nil when
// there is none.
func (s *Server) loginAccount(ctx context.Context, username string) (*User, error) {
	u, err := s.people.ByUsername(ctx, strings.TrimSpace(username))
	if errors.Is(err, directory.ErrNotFound) {
		return nil, nil
	}
	return u, err
}

// checkPassword returns the person if the password is right for the
// account u (nil: there is none), nil if not. It does the same work
// whether or not the account exists.
func (s *Server) checkPassword(u *User, password string) *User {
	hash := s.people.dummy
	if u != nil && u.PasswordHash != "" {
		hash = u.PasswordHash
	}
	if !CheckPassword(hash, password) || u == nil || u.PasswordHash == "" || u.Disabled {
		return nil
	}
	return u
}

// orgOf is the organization and the person's role in it; nil when it does
// not exist or they are not a member, which callers answer alike.
func (s *Server) orgOf(ctx context.Context, orgID, userID string) (*directory.Org, string, error) {
	role, err := s.people.Role(ctx, orgID, userID)
	if errors.Is(err, directory.ErrNotMember) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	o, err := s.people.Org(ctx, orgID)
	if errors.Is(err, directory.ErrNotFound) {
		return nil, "", nil
	}
	return o, role, err
}

// allMembers pages through every member of org.
func (s *Server) allMembers(ctx context.Context, org string) ([]directory.Member, error) {
	var out []directory.Member
	after := ""
	for {
		page, err := s.people.Members(ctx, org, after, 500)
		if err != nil || len(page) == 0 {
			return out, err
		}
		out = append(out, page...)
		after = page[len(page)-1].User.ID
	}
}

func securityOf(o *directory.Org) orgSecurity {
	return orgSecurity{MFARequired: o.MFARequired, PhishingResistant: o.PhishingResistant, SSOProvider: o.SSOProvider}
}

package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// The instance administrators' commands: GET /api/admin/users and
// PATCH /api/admin/users/{user}. Only the people the server's config lists
// under admins may call them; everyone else gets 403.

// adminPageSize is how many people admin:users asks for at a time (the
// server allows at most 500).
var adminPageSize = 100

// adminUser is one person as the admin API answers them.
type adminUser struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Email    string `json:"email"`
	Disabled bool   `json:"disabled"`
	Created  string `json:"created"`
}

func (a *App) adminUsersCmd(g *globals) *cobra.Command {
	var limit int
	var after string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "admin:users",
		Short: "List everyone on the instance: id, username, email, disabled, created (instance admins)",
		Long: `List everyone who has an account on this Stepup instance, in id order: id,
username, email, whether the account is disabled, and when it was created
(in local time). Only the instance's administrators (admins in the server's
config) may.

Every page of the list is fetched, unless --limit N stops after N people;
then the command says how to go on (--after the last id shown).

--json prints {"users": [...]} with every field the server gives, and
"next" when --limit stopped before the end.`,
		Example: `  stepup admin:users
  stepup admin:users --limit 20
  stepup admin:users --limit 20 --after u_7QbX2mK9dPzLw4aF
  stepup admin:users --json | jq -r '.users[] | select(.disabled) | .username'`,
		Args:              cobra.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("limit") && limit < 1 {
				return usageError(cmd, fmt.Sprintf("--limit %d: give how many people to list, 1 or more (or leave --limit out for everyone)", limit))
			}
			raw, next, err := a.allAdminUsers(cmd, g, after, limit)
			if err != nil {
				return a.adminRefusal(cmd, g, err, "list the instance's people")
			}
			if asJSON {
				out := struct {
					Users []json.RawMessage `json:"users"`
					Next  string            `json:"next,omitempty"`
				}{raw, next}
				b, err := json.MarshalIndent(out, "", "  ")
				if err != nil {
					return fmt.Errorf("the server's answer is not what was expected: %w", err)
				}
				fmt.Fprintf(a.Stdout, "%s\n", b)
				return nil
			}
			users := make([]adminUser, len(raw))
			for i, r := range raw {
				if err := json.Unmarshal(r, &users[i]); err != nil {
					return fmt.Errorf("the server's answer is not what was expected: %w", err)
				}
			}
			if len(users) == 0 {
				if after != "" {
					fmt.Fprintf(a.Stdout, "No people after %s.\n", after)
				} else {
					fmt.Fprintln(a.Stdout, "No people.")
				}
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUSERNAME\tEMAIL\tDISABLED\tCREATED")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.Username, orDash(u.Email), yesNo(u.Disabled), created(u.Created))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(a.Stderr, "There may be more people: stepup admin:users --limit %d --after %s\n", limit, idArg(next))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "list at most `N` people (default: everyone)")
	cmd.Flags().StringVar(&after, "after", "", "start after the person with this `id` (the last one a --limit run showed)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the people as JSON")
	noBrowserFlag(cmd, g)
	return cmd
}

// allAdminUsers fetches GET /api/admin/users page by page from after,
// following "next" until the server leaves it out, or until limit people
// (0: no limit); next is where a limited list stopped, "" at the end.
func (a *App) allAdminUsers(cmd *cobra.Command, g *globals, after string, limit int) (all []json.RawMessage, next string, err error) {
	all = []json.RawMessage{}
	seen := map[string]bool{}
	for {
		size := adminPageSize
		if limit > 0 {
			size = min(size, limit-len(all))
		}
		q := url.Values{"limit": {strconv.Itoa(size)}}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Users []json.RawMessage `json:"users"`
			Next  string            `json:"next"`
		}
		if err := a.apiJSON(cmd, g, http.MethodGet, "/api/admin/users?"+q.Encode(), nil, &page); err != nil {
			return nil, "", err
		}
		all = append(all, page.Users...)
		switch {
		case page.Next == "":
			return all, "", nil
		case limit > 0 && len(all) >= limit:
			return all, page.Next, nil
		case seen[page.Next]:
			return nil, "", fmt.Errorf("the server's list of people does not end: it gave next=%q twice", page.Next)
		}
		seen[page.Next] = true
		after = page.Next
	}
}

func (a *App) adminDisableCmd(g *globals) *cobra.Command {
	return a.adminSetDisabledCmd(g, true)
}

func (a *App) adminEnableCmd(g *globals) *cobra.Command {
	return a.adminSetDisabledCmd(g, false)
}

// adminSetDisabledCmd is admin:disable (disabled) or admin:enable.
func (a *App) adminSetDisabledCmd(g *globals, disabled bool) *cobra.Command {
	verb, did := "enable", "Enabled"
	short := "Enable a disabled account again (instance admins)"
	long := `Enable a disabled account again: the person can log in with their password,
SSO or an API token once more. Tokens and sessions that stopped working when
the account was disabled stay ended.`
	if disabled {
		verb, did = "disable", "Disabled"
		short = "Disable an account: every way in stops at once (instance admins)"
		long = `Disable an account: the person's browser sessions, refresh tokens, API
tokens and access tokens stop working at once, and they cannot log in until
an administrator runs stepup admin:enable. Nothing of theirs is deleted.
You cannot disable your own account.`
	}
	cmd := &cobra.Command{
		Use:   "admin:" + verb + " USER",
		Short: short,
		Long: long + `

USER is a user id or a username (stepup admin:users lists both). Only the
instance's administrators (admins in the server's config) may.`,
		Example: fmt.Sprintf("  stepup admin:%s bob\n  stepup admin:%s u_7QbX2mK9dPzLw4aF", verb, verb),
		Args:    cobra.ExactArgs(1),
		// People are not completed: that would need the network.
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			if strings.TrimSpace(user) == "" || user == "." || user == ".." {
				return usageError(cmd, fmt.Sprintf("%q is not a user: give a user id or a username", user))
			}
			if disabled {
				// The server refuses an administrator's own id, but (so
				// far) not their username: ask who we are first.
				self, err := a.isSelf(cmd, g, user)
				if err != nil {
					return a.adminRefusal(cmd, g, err, verb+" accounts")
				}
				if self {
					return errSelf
				}
			}
			var u adminUser
			err := a.apiJSON(cmd, g, http.MethodPatch, "/api/admin/users/"+url.PathEscape(user), map[string]bool{"disabled": disabled}, &u)
			if err != nil {
				var e *apiError
				switch {
				case !errors.As(err, &e):
				case e.status == http.StatusNotFound:
					return fmt.Errorf("There is no person %s on this instance (stepup admin:users lists everyone).", user)
				case e.status == http.StatusConflict && e.code == "self":
					return errSelf
				}
				return a.adminRefusal(cmd, g, err, verb+" accounts")
			}
			name := user
			if u.Username != "" && u.ID != "" {
				name = u.Username + " (" + u.ID + ")"
			}
			if u.Disabled != disabled {
				return fmt.Errorf("the server answered that %s is %s", name, map[bool]string{true: "disabled", false: "enabled"}[u.Disabled])
			}
			if disabled {
				fmt.Fprintf(a.Stdout, "%s %s: their sessions, refresh tokens, API tokens and access tokens no longer work, and they cannot log in.\n", did, name)
			} else {
				fmt.Fprintf(a.Stdout, "%s %s: they can log in again.\n", did, name)
			}
			return nil
		},
	}
	noBrowserFlag(cmd, g)
	return cmd
}

var errSelf = errors.New("You cannot disable your own account: another administrator can.")

// isSelf reports whether user (an id or a username) names the person
// logged in.
func (a *App) isSelf(cmd *cobra.Command, g *globals, user string) (bool, error) {
	var me struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	if err := a.apiJSON(cmd, g, http.MethodGet, "/api/me", nil, &me); err != nil {
		return false, fmt.Errorf("cannot tell who you are: %w", err)
	}
	return user == me.ID || me.Username != "" && strings.EqualFold(user, me.Username), nil
}

// adminRefusal puts a refusal of an admin call in words a person can act
// on: a 403 says that the caller is not one of the instance's
// administrators (unless the server refused for another reason, which it
// then names).
func (a *App) adminRefusal(cmd *cobra.Command, g *globals, err error, what string) error {
	var e *apiError
	if !errors.As(err, &e) || e.status != http.StatusForbidden {
		return err
	}
	if e.code != "" && e.code != "access_denied" || e.description != "" && !strings.Contains(e.description, "administrator") {
		return err // another refusal: a token of a client that may not manage, a missing scope
	}
	who := "You are"
	var me struct {
		Username string `json:"username"`
	}
	if a.apiJSON(cmd, g, http.MethodGet, "/api/me", nil, &me) == nil && me.Username != "" {
		who = "You (" + me.Username + ") are"
	}
	srv := "this Stepup instance"
	if g.srv != nil {
		srv = g.srv.URL
	}
	return fmt.Errorf("%s not an administrator of %s, so you cannot %s. Its administrators are the people listed under admins in the server's config: ask one of them.", who, srv, what)
}

// created is the server's creation time in local time, as the other
// tables show times.
func created(s string) string {
	if s == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return t.Local().Format(time.DateTime)
}

package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// roles are what PATCH /api/orgs/{org}/members/{user} accepts.
var roles = []string{"owner", "admin", "member"}

// memberPageSize is how many members the CLI asks for at a time (the
// server's limit, at most 500).
var memberPageSize = 100

// orgIDPattern is the server's rule for a new organization's id; the CLI
// leaves the decision to the server and uses it only to explain a refusal.
var orgIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

func (a *App) orgCreateCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "org:create ID",
		Short: "Create an organization, with you as its owner",
		Long: `Create an organization, with you as its owner.

ID is 2 to 63 lower-case letters, digits and '-', starting with a letter or
a digit, and cannot be changed later. The name defaults to the id.`,
		Example: `  stepup org:create acme-2 --name "ACME 2"`,
		Args:    cobra.ExactArgs(1),
		// The id is new: nothing to complete.
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if id == "" {
				return usageError(cmd, "ID is empty: give the new organization's id")
			}
			if cmd.Flags().Changed("name") && strings.TrimSpace(name) == "" {
				return usageError(cmd, "--name is empty: give a name, or leave --name out to use the id")
			}
			if !cmd.Flags().Changed("name") {
				name = id
			}
			var o orgView
			err := a.apiJSON(cmd, g, http.MethodPost, "/api/orgs", map[string]string{"id": id, "name": name}, &o)
			if err != nil {
				var e *apiError
				switch {
				case !errors.As(err, &e):
				case e.code == "org_exists" || e.status == http.StatusConflict && e.code == "":
					return fmt.Errorf("There is already an organization %s: choose another id.", id)
				case e.status == http.StatusBadRequest && !orgIDPattern.MatchString(id):
					return fmt.Errorf("%q is not a valid organization id: use 2 to 63 lower-case letters, digits and '-', starting with a letter or a digit.", id)
				}
				return err
			}
			fmt.Fprintf(a.Stdout, "Created %s; you are its owner.\n", o.ID)
			a.printOrg(o)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the organization's name as people see it (default: the id)")
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) orgMembersCmd(g *globals) *cobra.Command {
	var withoutMFA, asJSON bool
	cmd := &cobra.Command{
		Use:   "org:members ORG",
		Short: "List an organization's members: id, username, role and MFA status",
		Long: `List an organization's members: id, username, role and MFA status
(owners and admins). Every page of the list is fetched.

--json prints {"members": [...]} with every field the server gives.`,
		Example: `  stepup org:members acme
  stepup org:members acme --without-mfa
  stepup org:members acme --json | jq -r '.members[] | select(.role == "owner") | .username'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.allMembers(cmd, g, args[0], withoutMFA)
			if err != nil {
				return err
			}
			if asJSON {
				b, err := json.MarshalIndent(struct {
					Members []json.RawMessage `json:"members"`
				}{raw}, "", "  ")
				if err != nil {
					return fmt.Errorf("the server's answer is not what was expected: %w", err)
				}
				fmt.Fprintf(a.Stdout, "%s\n", b)
				return nil
			}
			members, err := decodeMembers(raw)
			if err != nil {
				return err
			}
			if len(members) == 0 {
				a.noMembers(withoutMFA)
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUSERNAME\tROLE\tMFA")
			for _, m := range members {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, m.Username, m.Role, onOff(m.MFAEnabled))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&withoutMFA, "without-mfa", false, "list only members without multi-factor authentication")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the members as JSON")
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) orgRoleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "org:role ORG USER ROLE",
		Short: "Change a member's role in an organization: owner, admin or member",
		Long: `Change a member's role in an organization: owner, admin or member.

USER is a user id or a username (stepup org:members ORG lists both).
Owners and admins manage members and admins; only owners make, demote or
remove owners. An organization always keeps at least one owner.`,
		Example: `  stepup org:role acme bob admin
  stepup org:role acme u_carol owner`,
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: completeRoleArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			org, user := args[0], args[1]
			role := strings.ToLower(args[2])
			if err := checkMemberArgs(cmd, org, user); err != nil {
				return err
			}
			if !slices.Contains(roles, role) {
				return usageError(cmd, fmt.Sprintf("%q is not a role: use owner, admin or member", args[2]))
			}
			var m orgMember
			err := a.apiJSON(cmd, g, http.MethodPatch, memberPath(org, user), map[string]string{"role": role}, &m)
			if err != nil {
				var e *apiError
				if errors.As(err, &e) && e.status == http.StatusBadRequest && e.description == "" {
					return fmt.Errorf("The server refused the role %s: use owner, admin or member.", role)
				}
				return a.memberRefusal(cmd, g, org, user, err,
					fmt.Sprintf("%s must keep an owner: make someone else an owner first (stepup org:role %s USER owner), then change %s's role.", org, org, user))
			}
			if m.Role == "" {
				m.Role = role
			}
			fmt.Fprintf(a.Stdout, "%s is now %s of %s.\n", memberName(m, user), withArticle(m.Role), org)
			return nil
		},
	}
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) orgRemoveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "org:remove ORG USER",
		Short: "Remove a member from an organization",
		Long: `Remove a member from an organization.

USER is a user id or a username (stepup org:members ORG lists both).
Owners and admins remove members and admins; only owners remove owners.
To leave an organization yourself, run stepup org:leave ORG.`,
		Example: `  stepup org:remove acme bob
  stepup org:remove acme u_carol`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org, user := args[0], args[1]
			if err := checkMemberArgs(cmd, org, user); err != nil {
				return err
			}
			if err := a.apiJSON(cmd, g, http.MethodDelete, memberPath(org, user), nil, nil); err != nil {
				return a.memberRefusal(cmd, g, org, user, err,
					fmt.Sprintf("%s must keep an owner: make someone else an owner first (stepup org:role %s USER owner), then remove %s.", org, org, user))
			}
			fmt.Fprintf(a.Stdout, "Removed %s from %s.\n", user, org)
			return nil
		},
	}
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) orgLeaveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "org:leave ORG",
		Short: "Leave an organization",
		Long: `Leave an organization. Any member may; its last owner must first make
someone else an owner.`,
		Example:           `  stepup org:leave acme`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org := args[0]
			if org == "" {
				return usageError(cmd, "ORG is empty: give an organization id")
			}
			var me struct {
				ID string `json:"id"`
			}
			if err := a.apiJSON(cmd, g, http.MethodGet, "/api/me", nil, &me); err != nil {
				return fmt.Errorf("cannot tell who you are: %w", err)
			}
			if me.ID == "" {
				return errors.New("cannot tell who you are: the server's /api/me has no id")
			}
			err := a.apiJSON(cmd, g, http.MethodDelete, memberPath(org, me.ID), nil, nil)
			var e *apiError
			switch {
			case err == nil:
				fmt.Fprintf(a.Stdout, "You have left %s.\n", org)
				return nil
			case !errors.As(err, &e):
				return err
			case e.code == "last_owner":
				return fmt.Errorf("%s must keep an owner and you are its last: make someone else an owner first (stepup org:role %s USER owner), then leave.", org, org)
			case e.status == http.StatusNotFound:
				return fmt.Errorf("No organization %s that you are a member of.", org)
			}
			return err
		},
	}
	noBrowserFlag(cmd, g)
	return cmd
}

// allMembers fetches every page of GET /api/orgs/{org}/members, following
// "next" (passed back as after=) until the server leaves it out.
func (a *App) allMembers(cmd *cobra.Command, g *globals, org string, withoutMFA bool) ([]json.RawMessage, error) {
	all := []json.RawMessage{}
	seen := map[string]bool{}
	after := ""
	for {
		q := url.Values{"limit": {strconv.Itoa(memberPageSize)}}
		if after != "" {
			q.Set("after", after)
		}
		if withoutMFA {
			q.Set("mfa_enabled", "false")
		}
		suffix := "/members?" + q.Encode()
		var page struct {
			Members []json.RawMessage `json:"members"`
			Next    string            `json:"next"`
		}
		if err := a.orgCall(cmd, g, org, http.MethodGet, suffix, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Members...)
		if page.Next == "" {
			return all, nil
		}
		if seen[page.Next] {
			return nil, fmt.Errorf("the server's list of members does not end: it gave next=%q twice", page.Next)
		}
		seen[page.Next] = true
		after = page.Next
	}
}

func decodeMembers(raw []json.RawMessage) ([]orgMember, error) {
	members := make([]orgMember, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &members[i]); err != nil {
			return nil, fmt.Errorf("the server's answer is not what was expected: %w", err)
		}
	}
	return members, nil
}

func (a *App) noMembers(withoutMFA bool) {
	if withoutMFA {
		fmt.Fprintln(a.Stdout, "Every member has multi-factor authentication.")
	} else {
		fmt.Fprintln(a.Stdout, "No members.")
	}
}

func memberPath(org, user string) string {
	return "/api/orgs/" + url.PathEscape(org) + "/members/" + url.PathEscape(user)
}

// checkMemberArgs refuses what cannot name an organization or a person:
// "." and ".." would change the path the request goes to.
func checkMemberArgs(cmd *cobra.Command, org, user string) error {
	if org == "" {
		return usageError(cmd, "ORG is empty: give an organization id")
	}
	if user == "" || user == "." || user == ".." {
		return usageError(cmd, fmt.Sprintf("%q is not a user: give a user id or a username", user))
	}
	return nil
}

// memberRefusal puts the server's refusal of a change to USER's membership
// in words a person can act on; lastOwner is what to say when the change
// would leave the organization without an owner.
func (a *App) memberRefusal(cmd *cobra.Command, g *globals, org, user string, err error, lastOwner string) error {
	var e *apiError
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case e.code == "last_owner":
		return errors.New(lastOwner)
	case e.status == http.StatusNotFound:
		return a.notMember(cmd, g, org, user)
	case e.status == http.StatusForbidden && e.description == "":
		return fmt.Errorf("You may not change %s's membership of %s; ask one of its owners.", user, org)
	}
	return err
}

// notMember explains a 404 for /api/orgs/{org}/members/{user}, which the
// server answers both when the caller cannot see the organization and when
// USER is not a member: asking for the organization tells which.
func (a *App) notMember(cmd *cobra.Command, g *globals, org, user string) error {
	var o orgView
	if err := a.orgCall(cmd, g, org, http.MethodGet, "", nil, &o); err != nil {
		return err
	}
	return fmt.Errorf("%s is not a member of %s (stepup org:members %s lists who is).", user, org, org)
}

// memberName is "bob (u_bob)" when the server said both, else what the
// person typed.
func memberName(m orgMember, typed string) string {
	switch {
	case m.Username != "" && m.ID != "":
		return m.Username + " (" + m.ID + ")"
	case m.Username != "":
		return m.Username
	}
	return typed
}

func withArticle(role string) string {
	switch role {
	case "owner", "admin":
		return "an " + role
	}
	return "a " + role
}

// completeRoleArg completes org:role's third argument; the organization
// and the person are not completed (that would need the network).
func completeRoleArg(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) != 2 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeRoles(toComplete), cobra.ShellCompDirectiveNoFileComp
}

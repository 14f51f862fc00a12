package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// invitation is one invitation as POST /api/orgs/{org}/invitations,
// GET …/invitations and POST …/invitations/{id}/resend answer it.
type invitation struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	InvitedBy string    `json:"invited_by"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
}

// linkDate is the day an invitation's link stops working, as its email
// says it: the server writes the date in UTC.
func (inv invitation) linkDate() string {
	return inv.Expires.UTC().Format("2 January 2006")
}

// until is ", until 10 December 2026" (or nothing when the server gave
// no expiry) for the sentences that tell how long a link works.
func (inv invitation) until() string {
	if inv.Expires.IsZero() {
		return ""
	}
	return ", until " + inv.linkDate()
}

func (a *App) orgInviteCmd(g *globals) *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:   "org:invite ORG EMAIL",
		Short: "Invite someone by email to join an organization with a role",
		Long: `Invite someone by email to join an organization as a member, an admin or
an owner (--role; default member).

The email carries a link that works once, for a week: it lets the person
create an account for that address, or join with an account of theirs
that has it. Owners and admins invite; only owners invite owners.
stepup invitations ORG lists the open invitations with their ids, which
invitations:resend (a new link and week) and invitations:revoke take.`,
		Example: `  stepup org:invite acme erin@example.com
  stepup org:invite acme frank@example.com --role admin`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org, addr := args[0], args[1]
			if org == "" {
				return usageError(cmd, "ORG is empty: give an organization id")
			}
			if strings.TrimSpace(addr) == "" {
				return usageError(cmd, "EMAIL is empty: give the address to invite, like erin@example.com")
			}
			if !slices.Contains(roles, strings.ToLower(role)) {
				return usageError(cmd, fmt.Sprintf("--role %q is not a role: use member, admin or owner", role))
			}
			role := strings.ToLower(role)
			var inv invitation
			err := a.orgCall(cmd, g, org, http.MethodPost, "/invitations", map[string]string{"email": addr, "role": role}, &inv)
			if err != nil {
				return a.inviteRefusal(cmd, g, org, addr, role, err)
			}
			if inv.Email == "" {
				inv.Email = addr
			}
			if inv.Role == "" {
				inv.Role = role
			}
			fmt.Fprintf(a.Stdout, "Invited %s to %s as %s; the link in the email works once%s.\n", inv.Email, org, withArticle(inv.Role), inv.until())
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "member", "the role the person gets on joining: member, admin or owner")
	_ = cmd.RegisterFlagCompletionFunc("role", func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeRoles(toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	noBrowserFlag(cmd, g)
	return cmd
}

// inviteRefusal puts the server's refusal of an invitation in words a
// person can act on.
func (a *App) inviteRefusal(cmd *cobra.Command, g *globals, org, addr, role string, err error) error {
	var e *apiError
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case e.status == http.StatusBadRequest && !plainAddress(addr):
		return fmt.Errorf("%q is not an email address: give a plain address like erin@example.com.", addr)
	case e.status == http.StatusBadRequest && e.description == "":
		return fmt.Errorf("The server refused to invite %s as %s: check the address, and use the role member, admin or owner.", addr, withArticle(role))
	case e.status == http.StatusForbidden:
		who := "owners or admins"
		if role == "owner" {
			who = "owners"
		}
		why := e.description
		if why == "" {
			why = fmt.Sprintf("You may not invite people to %s as %s.", org, withArticle(role))
		}
		return fmt.Errorf("%s Ask one of %s's %s to send the invitation.", why, org, who)
	case e.code == "too_many_invitations" || e.status == http.StatusConflict && e.code == "":
		return fmt.Errorf("%s has as many open invitations as it may have: revoke some first (stepup invitations %s lists them; stepup invitations:revoke %s ID revokes one), then invite again.", org, org, org)
	case e.code == "delivery_failed":
		if id := a.newestInvitation(cmd, g, org, addr, role); id != "" {
			return fmt.Errorf("The invitation of %s to %s was made (id %s), but its email could not be sent. Send it later with\n  stepup invitations:resend %s %s\n(rather than inviting again, which would make a second invitation).", addr, org, id, org, idArg(id))
		}
		return fmt.Errorf("The invitation of %s to %s was made, but its email could not be sent. Find its id with stepup invitations %s, then send it later with\n  stepup invitations:resend %s ID\n(rather than inviting again, which would make a second invitation).", addr, org, org, org)
	}
	return err
}

// newestInvitation is the id of the latest open invitation of addr to
// org with role, or "" when it cannot be told; it names the invitation
// whose email could not be sent, as the server's refusal does not.
func (a *App) newestInvitation(cmd *cobra.Command, g *globals, org, addr, role string) string {
	var list struct {
		Invitations []invitation `json:"invitations"`
	}
	if a.orgCall(cmd, g, org, http.MethodGet, "/invitations", nil, &list) != nil {
		return ""
	}
	var newest *invitation
	for i, inv := range list.Invitations {
		if strings.EqualFold(inv.Email, strings.TrimSpace(addr)) && inv.Role == role && (newest == nil || !inv.Created.Before(newest.Created)) {
			newest = &list.Invitations[i]
		}
	}
	if newest == nil {
		return ""
	}
	return newest.ID
}

func (a *App) invitationsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "invitations ORG",
		Short: "List an organization's open invitations: id, email, role, who invited, expiry",
		Long: `List an organization's open invitations (owners and admins): id, email,
role, who invited (a user id) and when the link expires, in local time.
Accepted, revoked and expired invitations are not listed.

--json prints {"invitations": [...]} with every field the server gives.`,
		Example: `  stepup invitations acme
  stepup invitations acme --json | jq -r '.invitations[].email'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list struct {
				Invitations []json.RawMessage `json:"invitations"`
			}
			if err := a.orgCall(cmd, g, args[0], http.MethodGet, "/invitations", nil, &list); err != nil {
				return err
			}
			if list.Invitations == nil {
				list.Invitations = []json.RawMessage{}
			}
			if asJSON {
				b, err := json.MarshalIndent(list, "", "  ")
				if err != nil {
					return fmt.Errorf("the server's answer is not what was expected: %w", err)
				}
				fmt.Fprintf(a.Stdout, "%s\n", b)
				return nil
			}
			invs := make([]invitation, len(list.Invitations))
			for i, r := range list.Invitations {
				if err := json.Unmarshal(r, &invs[i]); err != nil {
					return fmt.Errorf("the server's answer is not what was expected: %w", err)
				}
			}
			if len(invs) == 0 {
				fmt.Fprintln(a.Stdout, "No open invitations.")
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tINVITED BY\tEXPIRES")
			for _, inv := range invs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", inv.ID, inv.Email, inv.Role, orDash(inv.InvitedBy), expires(inv.Expires))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the invitations as JSON")
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) invitationsResendCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "invitations:resend ORG ID",
		Short: "Email an invitation again, with a new link that works for a week",
		Long: `Email an invitation again, with a new link that works once, for a week
from now; the link of the earlier email stops working.

ID is an invitation's id (stepup invitations ORG lists them). An id that
begins with '-' goes after "--": stepup invitations:resend acme -- -x1Yz.`,
		Example: `  stepup invitations:resend acme 4kT9c2mQx1YzAbCd
  stepup invitations:resend acme -- -x1YzAbCd4kT9c2m`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org, id := args[0], args[1]
			if err := checkInvitationArgs(cmd, org, id); err != nil {
				return err
			}
			var inv invitation
			if err := a.apiJSON(cmd, g, http.MethodPost, invitationPath(org, id)+"/resend", nil, &inv); err != nil {
				var e *apiError
				if errors.As(err, &e) && e.code == "delivery_failed" {
					return fmt.Errorf("Invitation %s of %s has a new link, but its email could not be sent, and the link of the earlier email no longer works. Try again later:\n  stepup invitations:resend %s %s", id, org, org, idArg(id))
				}
				return a.invitationRefusal(cmd, g, org, id, err)
			}
			to := inv.Email
			if to == "" {
				to = "the invited address"
			}
			fmt.Fprintf(a.Stdout, "Sent invitation %s of %s to %s again; the earlier link no longer works, the new one works once%s.\n", id, org, to, inv.until())
			return nil
		},
	}
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) invitationsRevokeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "invitations:revoke ORG ID",
		Short: "Revoke an invitation: its link stops working",
		Long: `Revoke an invitation: its link stops working at once.

ID is an invitation's id (stepup invitations ORG lists them). An id that
begins with '-' goes after "--": stepup invitations:revoke acme -- -x1Yz.`,
		Example: `  stepup invitations:revoke acme 4kT9c2mQx1YzAbCd
  stepup invitations:revoke acme -- -x1YzAbCd4kT9c2m`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org, id := args[0], args[1]
			if err := checkInvitationArgs(cmd, org, id); err != nil {
				return err
			}
			if err := a.apiJSON(cmd, g, http.MethodDelete, invitationPath(org, id), nil, nil); err != nil {
				return a.invitationRefusal(cmd, g, org, id, err)
			}
			fmt.Fprintf(a.Stdout, "Revoked invitation %s of %s; its link no longer works.\n", id, org)
			return nil
		},
	}
	noBrowserFlag(cmd, g)
	return cmd
}

// invitationRefusal puts the server's refusal to resend or revoke
// invitation id in words a person can act on.
func (a *App) invitationRefusal(cmd *cobra.Command, g *globals, org, id string, err error) error {
	var e *apiError
	if !errors.As(err, &e) {
		return err
	}
	switch e.status {
	case http.StatusNotFound:
		// The server answers 404 both when the caller cannot see the
		// organization and when it has no such open invitation:
		// asking for the organization tells which.
		var o orgView
		if err := a.orgCall(cmd, g, org, http.MethodGet, "", nil, &o); err != nil {
			return err
		}
		return fmt.Errorf("%s has no open invitation %s: it may have been accepted, revoked or have expired (stepup invitations %s lists the open ones).", org, id, org)
	case http.StatusForbidden:
		why := e.description
		if why == "" {
			why = fmt.Sprintf("You may not change invitation %s of %s.", id, org)
		}
		return fmt.Errorf("%s Ask one of %s's owners.", why, org)
	}
	return err
}

func invitationPath(org, id string) string {
	return "/api/orgs/" + url.PathEscape(org) + "/invitations/" + url.PathEscape(id)
}

// checkInvitationArgs refuses what cannot name an organization or an
// invitation: "." and ".." would change the path the request goes to.
func checkInvitationArgs(cmd *cobra.Command, org, id string) error {
	if org == "" {
		return usageError(cmd, "ORG is empty: give an organization id")
	}
	if id == "" || id == "." || id == ".." {
		return usageError(cmd, fmt.Sprintf("%q is not an invitation id: stepup invitations %s lists them", id, org))
	}
	return nil
}

// idArg is an invitation id as it goes on a command line: after "--"
// when it begins with '-', which would otherwise read as a flag (ids are
// random base64url, so one in 64 does).
func idArg(id string) string {
	if strings.HasPrefix(id, "-") {
		return "-- " + id
	}
	return id
}

// plainAddress is the server's rule for an invited address: a bare
// address like erin@example.com, no name or angle brackets.
func plainAddress(s string) bool {
	addr, err := mail.ParseAddress(s)
	return err == nil && addr.Address == strings.TrimSpace(s)
}

func expires(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// completeRoles is the roles that begin with what was typed.
func completeRoles(toComplete string) []cobra.Completion {
	var out []cobra.Completion
	for _, r := range roles {
		if strings.HasPrefix(r, strings.ToLower(toComplete)) {
			out = append(out, r)
		}
	}
	return out
}

package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// orgView is an organization as GET /api/orgs/{org} and
// PATCH /api/orgs/{org}/security answer it.
type orgView struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	MFARequired bool   `json:"mfa_required"`
	SSOProvider string `json:"sso_provider"`
}

// orgMember is one row of GET /api/orgs/{org}/members.
type orgMember struct {
	ID             string   `json:"id"`
	Username       string   `json:"username"`
	Email          string   `json:"email"`
	Role           string   `json:"role"`
	MFAEnabled     bool     `json:"mfa_enabled"`
	SSOProviders   []string `json:"sso_providers"`
	LastRemindedAt *string  `json:"last_reminded_at"`
}

// reminderResult is what POST /api/orgs/{org}/mfa-reminders answers.
type reminderResult struct {
	Sent    []string `json:"sent"`
	Skipped []struct {
		ID     string `json:"id"`
		Reason string `json:"reason"`
	} `json:"skipped"`
}

// apiError is the API's refusal of a call: the HTTP status and the JSON
// error body ({"error", "error_description"}), when there was one.
type apiError struct {
	status      int
	code        string
	description string
}

func (e *apiError) Error() string {
	switch {
	case e.description != "":
		return e.description
	case e.code != "":
		return fmt.Sprintf("the server answered %d: %s", e.status, e.code)
	}
	return fmt.Sprintf("the server answered %d", e.status)
}

// apiJSON calls the API the way `stepup api` does (stepping up when the
// server demands it) with in as the JSON body (nil: none), and decodes a
// successful answer into out (nil: the body is ignored, as for a 204). A
// refusal is an *apiError.
func (a *App) apiJSON(cmd *cobra.Command, g *globals, method, path string, in, out any) error {
	srv, err := a.discovered(cmd.Context(), g)
	if err != nil {
		return err
	}
	var data string
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		data = string(b)
	}
	status, body, err := a.callAPIWithStepUp(cmd.Context(), g, srv, method, path, data)
	if err != nil {
		return err
	}
	if status >= 200 && status < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("the server's answer is not what was expected: %w", err)
		}
		return nil
	}
	e := &apiError{status: status}
	var b struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &b) == nil {
		e.code, e.description = b.Error, b.Description
	}
	return e
}

// orgCall calls /api/orgs/{org}{suffix} with apiJSON; a 404 (which the
// server answers alike for an organization that does not exist and for
// one the caller is not a member of) says so, and other refusals are the
// server's words.
func (a *App) orgCall(cmd *cobra.Command, g *globals, org, method, suffix string, in, out any) error {
	if org == "" {
		return usageError(cmd, "ORG is empty: give an organization id")
	}
	err := a.apiJSON(cmd, g, method, "/api/orgs/"+url.PathEscape(org)+suffix, in, out)
	var e *apiError
	if errors.As(err, &e) && e.status == http.StatusNotFound {
		return fmt.Errorf("No organization %s that you can see.", org)
	}
	return err
}

func (a *App) orgSecurityCmd(g *globals) *cobra.Command {
	var mfaRequired, ssoProvider string
	cmd := &cobra.Command{
		Use:   "org:security ORG",
		Short: "Show or change an organization's security requirements",
		Example: `  stepup org:security acme
  stepup org:security acme --mfa-required on
  stepup org:security acme --sso-provider acme
  stepup org:security acme --mfa-required off --sso-provider none`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org := args[0]
			change := map[string]any{}
			if cmd.Flags().Changed("mfa-required") {
				switch strings.ToLower(mfaRequired) {
				case "on", "true", "yes":
					change["mfa_required"] = true
				case "off", "false", "no":
					change["mfa_required"] = false
				default:
					return fmt.Errorf("--mfa-required takes on or off, not %q", mfaRequired)
				}
			}
			if cmd.Flags().Changed("sso-provider") {
				switch p := strings.TrimSpace(ssoProvider); {
				case p == "":
					return errors.New(`--sso-provider takes a provider id, or "none" to require no SSO`)
				case strings.EqualFold(p, "none"):
					change["sso_provider"] = ""
				default:
					change["sso_provider"] = p
				}
			}
			var o orgView
			var err error
			if len(change) == 0 {
				err = a.orgCall(cmd, g, org, http.MethodGet, "", nil, &o)
			} else {
				err = a.orgCall(cmd, g, org, http.MethodPatch, "/security", change, &o)
			}
			if err != nil {
				return err
			}
			if len(change) > 0 {
				fmt.Fprintln(a.Stdout, "Updated.")
			}
			a.printOrg(o)
			return nil
		},
	}
	cmd.Flags().StringVar(&mfaRequired, "mfa-required", "", "require multi-factor authentication of members: on or off")
	cmd.Flags().StringVar(&ssoProvider, "sso-provider", "", `require logging in through this SSO provider; "none" for no provider`)
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) orgUsersCmd(g *globals) *cobra.Command {
	var withoutMFA bool
	cmd := &cobra.Command{
		Use:   "org:users ORG",
		Short: "List an organization's members with email, MFA status and last reminder",
		Example: `  stepup org:users acme
  stepup org:users acme --without-mfa`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.allMembers(cmd, g, args[0], withoutMFA)
			if err != nil {
				return err
			}
			members, err := decodeMembers(raw)
			if err != nil {
				return err
			}
			if len(members) == 0 {
				a.noMembers(withoutMFA)
				return nil
			}
			// The ID is what org:remind and org:role take.
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUSERNAME\tEMAIL\tROLE\tMFA\tLAST REMINDED")
			for _, m := range members {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Username, orDash(m.Email), m.Role, onOff(m.MFAEnabled), reminded(m.LastRemindedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&withoutMFA, "without-mfa", false, "list only members without multi-factor authentication")
	noBrowserFlag(cmd, g)
	return cmd
}

func (a *App) orgRemindCmd(g *globals) *cobra.Command {
	var allWithoutMFA bool
	cmd := &cobra.Command{
		Use:   "org:remind ORG [USER_ID...]",
		Short: "Email members a reminder to turn on multi-factor authentication",
		Example: `  stepup org:remind acme u_bob u_carol
  stepup org:remind acme --all-without-mfa`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			org, ids := args[0], args[1:]
			var body map[string]any
			switch {
			case allWithoutMFA && len(ids) > 0:
				return usageError(cmd, "give either USER_IDs or --all-without-mfa, not both")
			case allWithoutMFA:
				body = map[string]any{"all_without_mfa": true}
			case len(ids) > 0:
				body = map[string]any{"user_ids": ids}
			default:
				return usageError(cmd, "say whom to remind: one or more USER_IDs, or --all-without-mfa")
			}
			var res reminderResult
			if err := a.orgCall(cmd, g, org, http.MethodPost, "/mfa-reminders", body, &res); err != nil {
				return err
			}
			sent := "nobody"
			if len(res.Sent) > 0 {
				sent = strings.Join(res.Sent, ", ")
			}
			fmt.Fprintf(a.Stdout, "Sent: %s\n", sent)
			if len(res.Skipped) > 0 {
				fmt.Fprintln(a.Stdout, "Skipped:")
				for _, s := range res.Skipped {
					fmt.Fprintf(a.Stdout, "  %s: %s\n", s.ID, skipReason(s.Reason))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&allWithoutMFA, "all-without-mfa", false, "remind every member who has not turned on multi-factor authentication")
	noBrowserFlag(cmd, g)
	return cmd
}

// printOrg shows an organization's settings as org:security and
// org:create do.
func (a *App) printOrg(o orgView) {
	sso := o.SSOProvider
	if sso == "" {
		sso = "none"
	}
	fmt.Fprintf(a.Stdout, "Organization: %s (%s)\n", o.Name, o.ID)
	fmt.Fprintf(a.Stdout, "MFA required: %s\n", yesNo(o.MFARequired))
	fmt.Fprintf(a.Stdout, "SSO provider: %s\n", sso)
}

// usageError is a mistake on the command line: it says what is wrong and
// where the usage is.
func usageError(cmd *cobra.Command, msg string) error {
	return fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath())
}

// skipReason puts the server's reason for not reminding someone in words.
func skipReason(reason string) string {
	switch reason {
	case "not_a_member":
		return "not a member of the organization"
	case "mfa_enabled":
		return "already uses multi-factor authentication"
	case "reminded_recently":
		return "reminded recently; try again later"
	case "no_email":
		return "has no email address"
	case "delivery_failed":
		return "the email could not be delivered; try again later"
	case "self":
		return "that is you: set up MFA at your account's security page"
	}
	return strings.ReplaceAll(reason, "_", " ")
}

func reminded(at *string) string {
	if at == nil || *at == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339, *at)
	if err != nil {
		return *at
	}
	return t.Local().Format(time.DateTime)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

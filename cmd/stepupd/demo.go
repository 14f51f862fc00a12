package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/stepup-dev/stepup/internal/config"
)

// demo is what --dev seeds, so a newcomer can log in at once and walk the
// whole story: a login, MFA, an organization that requires it, and the SSH
// gateway in front of a git repository.
type demo struct {
	username, password string
	// serviceSecret is the confidential demo client's, when seeded here.
	serviceSecret string
	// member and memberPassword are the second person's, when seeded here.
	member, memberPassword string
	// gatewayID and gatewaySecret are the gateway's client credentials,
	// seeded here or the config's own; empty when there are none to print.
	gatewayID, gatewaySecret string
	// sshAddr is where the gateway for demoRepo listens.
	sshAddr string
}

const (
	demoClient = "stepup-cli"
	// demoService is a confidential client: client_credentials and
	// introspection (fosite lets any client that authenticates introspect),
	// so that stepupd bench runs against --dev as it is.
	demoService = "demo-service"

	// demoMember is a second person, a plain member. Not bob: the
	// invitation walk in README.md invites bob@example.com to choose that
	// username himself.
	demoMember   = "carol"
	demoMemberID = "u_carol"
	// demoMFAOrg requires MFA of every member.
	demoMFAOrg = "acme"
	// demoRepo is the service that stepup-gateway protects, in demoMFAOrg.
	demoRepo = "demo-repo"
	// demoGateway is the gateway's client at the server: client_credentials
	// with access.read, for GET /api/orgs/{org}/access/{user_id}.
	demoGateway = "stepup-gateway"
	// demoGatewayPort is stepup-gateway's default --ssh-addr port.
	demoGatewayPort = "2222"
)

// seedDemo adds to cfg, unless the config already has them: the demo
// organization and its owner alice, a second person (carol), the
// organization acme that requires MFA (alice owns it, carol is a member),
// the service demo-repo in acme behind the SSH gateway, the CLI client,
// the confidential demo-service client, and the gateway's client.
func seedDemo(cfg *config.Config) (*demo, error) {
	d := &demo{username: "alice", password: randomSecret()[:16], serviceSecret: randomSecret(),
		member: demoMember, memberPassword: randomSecret()[:16]}
	seededDemoOrg := false
	if userID(cfg, d.username) == "" {
		cfg.Users = append(cfg.Users, config.User{ID: "u_alice", Username: d.username, Email: "alice@example.com",
			Name: "Alice Example", Password: d.password})
		cfg.Orgs = append(cfg.Orgs, config.Org{ID: "demo", Name: "Demo organization",
			Members: []config.Member{{User: "u_alice", Role: "owner"}}})
		seededDemoOrg = true
	} else {
		d.password = "" // the config's own password applies
	}
	if userID(cfg, demoMember) == "" && !slices.ContainsFunc(cfg.Users, func(u config.User) bool { return u.ID == demoMemberID }) {
		cfg.Users = append(cfg.Users, config.User{ID: demoMemberID, Username: demoMember, Email: "carol@example.com",
			Name: "Carol Example", Password: d.memberPassword})
		if seededDemoOrg {
			o := &cfg.Orgs[len(cfg.Orgs)-1]
			o.Members = append(o.Members, config.Member{User: demoMemberID, Role: "member"})
		}
	} else {
		d.memberPassword = ""
	}
	if !slices.ContainsFunc(cfg.Orgs, func(o config.Org) bool { return o.ID == demoMFAOrg }) {
		acme := config.Org{ID: demoMFAOrg, Name: "ACME", MFARequired: true}
		if id := userID(cfg, d.username); id != "" {
			acme.Members = append(acme.Members, config.Member{User: id, Role: "owner"})
		}
		if id := userID(cfg, demoMember); id != "" {
			acme.Members = append(acme.Members, config.Member{User: id, Role: "member"})
		}
		cfg.Orgs = append(cfg.Orgs, acme)
	}
	if i := slices.IndexFunc(cfg.Services, func(s config.Service) bool { return s.ID == demoRepo }); i >= 0 {
		d.sshAddr = cfg.Services[i].SSHAddress
	} else {
		d.sshAddr = net.JoinHostPort(demoHost(cfg), demoGatewayPort)
		cfg.Services = append(cfg.Services, config.Service{ID: demoRepo, Org: demoMFAOrg, SSHAddress: d.sshAddr})
	}
	if d.sshAddr == "" {
		d.sshAddr = net.JoinHostPort(demoHost(cfg), demoGatewayPort)
	}

	if !hasClient(cfg, demoClient) {
		cfg.Clients = append(cfg.Clients, config.Client{
			ID: demoClient, Public: true,
			RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes:   []string{"authorization_code", "refresh_token", "api_token", "urn:ietf:params:oauth:grant-type:device_code"},
			Scopes:       []string{"openid", "offline_access", "profile", "email"},
		})
	}
	if hasClient(cfg, demoService) {
		d.serviceSecret = "" // the config's own secret applies
	} else {
		cfg.Clients = append(cfg.Clients, config.Client{
			ID: demoService, Secret: d.serviceSecret,
			GrantTypes: []string{"client_credentials"},
			Scopes:     []string{"access.read"},
		})
	}
	switch i := slices.IndexFunc(cfg.Clients, func(c config.Client) bool { return c.ID == demoGateway }); {
	case cfg.Gateway.ClientID != "":
		// The config's own gateway keys.
	case i < 0:
		secret := randomSecret()
		cfg.Clients = append(cfg.Clients, config.Client{
			ID: demoGateway, Secret: secret,
			GrantTypes: []string{"client_credentials"},
			Scopes:     []string{"access.read"},
		})
		cfg.Gateway = config.Gateway{ClientID: demoGateway, ClientSecret: secret}
	case cfg.Clients[i].Secret != "":
		cfg.Gateway = config.Gateway{ClientID: demoGateway, ClientSecret: cfg.Clients[i].Secret}
	}
	d.gatewayID, d.gatewaySecret = cfg.Gateway.ClientID, cfg.Gateway.ClientSecret
	return d, nil
}

func userID(cfg *config.Config, username string) string {
	for _, u := range cfg.Users {
		if u.Username == username {
			return u.ID
		}
	}
	return ""
}

func hasClient(cfg *config.Config, id string) bool {
	return slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.ID == id })
}

// demoHost is the loopback host the server answers on, for the gateway to
// listen beside it: the issuer's, else the listen address's.
func demoHost(cfg *config.Config) string {
	host := ""
	if u, err := url.Parse(cfg.Issuer); err == nil && cfg.Issuer != "" {
		host = u.Hostname()
	} else if h, _, err := net.SplitHostPort(cfg.Addr); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return "127.0.0.1"
	}
	return host
}

func (d *demo) print(w io.Writer, cfg *config.Config) {
	if storeKind(cfg.Store) == "memory" {
		fmt.Fprintf(w, "\nStepup is running in development mode (in-memory store: everything is lost when it stops).\n\n")
	} else {
		fmt.Fprintf(w, "\nStepup is running in development mode (store: %s).\n\n", storeKind(cfg.Store))
	}
	fmt.Fprintf(w, "  issuer:    %s\n", cfg.Issuer)
	fmt.Fprintf(w, "  discovery: %s/.well-known/openid-configuration\n", cfg.Issuer)
	// Tests and scripts read the "password: " lines until they have seen
	// a "secret: " line too, and take the last password as alice's and
	// that secret as demo-service's: carol's line comes after both.
	if d.password != "" {
		fmt.Fprintf(w, "  user:      %s   password: %s   (owner of organizations \"demo\" and %q)\n", d.username, d.password, demoMFAOrg)
	}
	fmt.Fprintf(w, "  client:    %s (public; redirect http://127.0.0.1:<any port>/callback; PKCE S256)\n", demoClient)
	if d.serviceSecret != "" {
		fmt.Fprintf(w, "  service:   %s   secret: %s   (confidential; client_credentials, introspection)\n", demoService, d.serviceSecret)
	}
	if d.memberPassword != "" {
		fmt.Fprintf(w, "  user:      %s   password: %s   (member of \"demo\" and %q)\n", d.member, d.memberPassword, demoMFAOrg)
	}
	if o := d.mfaOrg(cfg); o != nil {
		fmt.Fprintf(w, "  org:       %s (%s)   MFA required: %s; service %s behind the SSH gateway at %s\n",
			o.ID, o.Name, onOff(o.MFARequired), demoRepo, d.sshAddr)
	}
	if d.gatewayID != "" {
		fmt.Fprintf(w, "  gateway:   %s (confidential; client_credentials, access.read; its secret is in the gateway's command below)\n", d.gatewayID)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Try a login in the browser (any code_challenge of 43+ characters works for a look at the pages):\n")
	fmt.Fprintf(w, "  %s/oauth2/authorize?response_type=code&client_id=%s&redirect_uri=http://127.0.0.1:9999/callback&scope=openid&state=demo-state-1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\n\n",
		cfg.Issuer, demoClient)
	if d.password != "" && d.serviceSecret != "" {
		fmt.Fprintf(w, "Put it under load:\n  stepupd bench --url %s --client-secret %s --password %s\n\n", cfg.Issuer, d.serviceSecret, d.password)
	}
	d.printStory(w, cfg)
}

func (d *demo) mfaOrg(cfg *config.Config) *config.Org {
	if i := slices.IndexFunc(cfg.Orgs, func(o config.Org) bool { return o.ID == demoMFAOrg }); i >= 0 {
		return &cfg.Orgs[i]
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// printStory prints the commands of README.md's "Walk the story in five
// minutes", for this server.
func (d *demo) printStory(w io.Writer, cfg *config.Config) {
	if d.gatewayID == "" || d.gatewaySecret == "" {
		fmt.Fprintf(w, "The config names no gateway client with its secret (gateway: {client_id, client_secret}), so there is no\nstepup-gateway command to print.\n\n")
		return
	}
	fmt.Fprintf(w, "Walk the story (README.md, \"Walk the story in five minutes\"; from a checkout, go install ./cmd/...\nputs stepup and stepup-gateway on your PATH):\n")
	fmt.Fprintf(w, "  1. Start the SSH gateway, in another terminal:\n")
	for _, line := range d.gatewayCommand(cfg) {
		fmt.Fprintf(w, "       %s\n", line)
	}
	whose := "the password is above"
	if d.password == "" {
		whose = "with the config's password"
	}
	fmt.Fprintf(w, "  2. Log in as %s (the browser opens; %s):\n", d.username, whose)
	fmt.Fprintf(w, "       export STEPUP_URL=%s\n", cfg.Issuer)
	fmt.Fprintf(w, "       stepup login\n")
	fmt.Fprintf(w, "  3. Set up MFA: open %s/account/security, \"Set up application\", then \"Verify & save\".\n", cfg.Issuer)
	fmt.Fprintf(w, "  4. Connect: %s requires MFA, so stepup logs in again for the code, then retries:\n", demoMFAOrg)
	fmt.Fprintf(w, "       stepup ssh %s whoami\n", demoRepo)
	fmt.Fprintf(w, "  5. git through the gateway, with the certificate stepup keeps:\n")
	for _, line := range d.gitCommands() {
		fmt.Fprintf(w, "       %s\n", line)
	}
	fmt.Fprintf(w, "  %s's security settings, and who has MFA: %s/orgs/%s/settings/security\n\n", demoMFAOrg, cfg.Issuer, demoMFAOrg)
}

// gatewayCommand is the stepup-gateway command line for this server, as
// lines of one shell command. Its keys come as STEPUP_* variables, which
// the gateway reads as it reads its config file.
func (d *demo) gatewayCommand(cfg *config.Config) []string {
	type service struct {
		ID  string `json:"id"`
		Org string `json:"org"`
	}
	var services []service
	for _, s := range cfg.Services {
		services = append(services, service{s.ID, s.Org})
	}
	list, _ := json.Marshal(services)
	return []string{
		"STEPUP_GATEWAY_CLIENT_ID=" + shellQuote(d.gatewayID) + " STEPUP_GATEWAY_CLIENT_SECRET=" + shellQuote(d.gatewaySecret) + ` \`,
		"STEPUP_SERVICES=" + shellQuote(string(list)) + ` \`,
		"stepup-gateway --issuer " + shellQuote(cfg.Issuer) + " --ssh-addr " + shellQuote(d.sshAddr) +
			" --git-root " + shellQuote(filepath.Join(os.TempDir(), "stepup-demo-git")),
	}
}

// gitCommands push a first commit to demoRepo and clone it back, with
// ssh given the CLI's key and certificate and its pinned host keys.
func (d *demo) gitCommands() []string {
	host, port, _ := net.SplitHostPort(d.sshAddr)
	remote := "ssh://" + demoRepo + "@" + net.JoinHostPort(host, port) + "/" + demoRepo + ".git"
	return []string{
		`c=${XDG_CONFIG_HOME:-$HOME/.config}/stepup`,
		`export GIT_SSH_COMMAND="ssh -i $c/id_ed25519 -o CertificateFile=$c/id_ed25519-cert.pub -o IdentitiesOnly=yes -o UserKnownHostsFile=$c/known_hosts -o StrictHostKeyChecking=accept-new"`,
		"git init " + demoRepo + " && cd " + demoRepo + ` && echo "Hello through the gateway" > README && git add README && git commit -m first`,
		"git push " + remote + " HEAD:main",
		"git clone " + remote + " ../" + demoRepo + "-clone",
	}
}

// shellQuote leaves words of safe characters alone and single-quotes the
// rest.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

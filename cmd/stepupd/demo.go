package main

import (
	"fmt"
	"io"

	"github.com/stepup-dev/stepup/internal/config"
)

// demo is what --dev seeds, so a newcomer can log in at once.
type demo struct {
	username, password string
	// serviceSecret is the confidential demo client's, when seeded here.
	serviceSecret string
}

const (
	demoClient = "stepup-cli"
	// demoService is a confidential client: client_credentials and
	// introspection (fosite lets any client that authenticates introspect),
	// so that stepupd bench runs against --dev as it is.
	demoService = "demo-service"
)

// seedDemo adds a demo organization, its owner, the CLI client and a
// confidential service client to cfg, unless the config already has them.
func seedDemo(cfg *config.Config) (*demo, error) {
	d := &demo{username: "alice", password: randomSecret()[:16], serviceSecret: randomSecret()}
	hasUser := false
	for _, u := range cfg.Users {
		hasUser = hasUser || u.Username == d.username
	}
	if !hasUser {
		cfg.Users = append(cfg.Users, config.User{ID: "u_alice", Username: d.username, Email: "alice@example.com",
			Name: "Alice Example", Password: d.password})
		cfg.Orgs = append(cfg.Orgs, config.Org{ID: "demo", Name: "Demo organization",
			Members: []config.Member{{User: "u_alice", Role: "owner"}}})
	} else {
		d.password = "" // the config's own password applies
	}
	hasClient := false
	for _, c := range cfg.Clients {
		hasClient = hasClient || c.ID == demoClient
	}
	if !hasClient {
		cfg.Clients = append(cfg.Clients, config.Client{
			ID: demoClient, Public: true,
			RedirectURIs: []string{"http://127.0.0.1/callback"},
			GrantTypes:   []string{"authorization_code", "refresh_token", "api_token"},
			Scopes:       []string{"openid", "offline_access", "profile", "email"},
		})
	}
	hasService := false
	for _, c := range cfg.Clients {
		hasService = hasService || c.ID == demoService
	}
	if hasService {
		d.serviceSecret = "" // the config's own secret applies
	} else {
		cfg.Clients = append(cfg.Clients, config.Client{
			ID: demoService, Secret: d.serviceSecret,
			GrantTypes: []string{"client_credentials"},
			Scopes:     []string{"access.read"},
		})
	}
	return d, nil
}

func (d *demo) print(w io.Writer, cfg *config.Config) {
	if storeKind(cfg.Store) == "memory" {
		fmt.Fprintf(w, "\nStepup is running in development mode (in-memory store: everything is lost when it stops).\n\n")
	} else {
		fmt.Fprintf(w, "\nStepup is running in development mode (store: %s).\n\n", storeKind(cfg.Store))
	}
	fmt.Fprintf(w, "  issuer:    %s\n", cfg.Issuer)
	fmt.Fprintf(w, "  discovery: %s/.well-known/openid-configuration\n", cfg.Issuer)
	if d.password != "" {
		fmt.Fprintf(w, "  user:      %s   password: %s   (owner of organization \"demo\")\n", d.username, d.password)
	}
	fmt.Fprintf(w, "  client:    %s (public; redirect http://127.0.0.1:<any port>/callback; PKCE S256)\n", demoClient)
	if d.serviceSecret != "" {
		fmt.Fprintf(w, "  service:   %s   secret: %s   (confidential; client_credentials, introspection)\n", demoService, d.serviceSecret)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Try a login in the browser (any code_challenge of 43+ characters works for a look at the pages):\n")
	fmt.Fprintf(w, "  %s/oauth2/authorize?response_type=code&client_id=%s&redirect_uri=http://127.0.0.1:9999/callback&scope=openid&state=demo-state-1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\n\n",
		cfg.Issuer, demoClient)
	if d.password != "" && d.serviceSecret != "" {
		fmt.Fprintf(w, "Put it under load:\n  stepupd bench --url %s --client-secret %s --password %s\n\n", cfg.Issuer, d.serviceSecret, d.password)
	}
}

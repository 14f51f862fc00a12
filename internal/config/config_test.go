package config

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// lines builds a file one line per argument, so the expected line numbers
// in the cases below can be read off by counting.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// load runs Load on content written to ./stepup.yaml, so that error
// positions read "stepup.yaml:N" as a person would see them.
func load(t *testing.T, content string, env map[string]string) (*Config, error) {
	t.Helper()
	path := ""
	if content != "" {
		path = "stepup.yaml"
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(path) })
	}
	return Load(path, envOf(env))
}

const (
	oneUser     = "users: [{id: u1, username: ann, email: ann@example.com, password: pw}]"
	oneOrg      = "orgs: [{id: acme, members: [{user: u1, role: owner}]}]"
	cliClient   = `{id: cli, public: true, redirect_uris: ["http://127.0.0.1/cb"]}`
	validHash   = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	argon2Hash  = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	redisStore  = "store: redis://127.0.0.1:6379/0"
	longSecret  = "secret: 0123456789abcdef"
	loopbackIss = "issuer: http://127.0.0.1:8080"
)

func TestLoad(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct {
		name   string
		file   string
		env    map[string]string
		check  func(t *testing.T, c *Config)
		want   []string // substrings of the error
		reject []string // must not appear in the error
	}{
		{
			name: "ok/no-file",
			check: func(t *testing.T, c *Config) {
				if c.Issuer != "http://127.0.0.1:8080" || c.Addr != "127.0.0.1:8080" || c.Store != "memory" || c.Secret != "" {
					t.Errorf("got issuer %q addr %q store %q secret %q", c.Issuer, c.Addr, c.Store, c.Secret)
				}
			},
		},
		{
			name: "ok/empty-file",
			file: "# nothing here yet\n",
		},
		{
			name: "ok/loopback-issuers",
			file: lines("issuer: http://localhost:9000", "addr: '[::1]:9000'"),
		},
		{
			name: "ok/ipv6-loopback-issuer",
			file: lines("issuer: 'http://[::1]:9000/'"),
		},
		{
			name: "ok/issuer-follows-loopback-addr",
			file: lines("addr: localhost:9999"),
			check: func(t *testing.T, c *Config) {
				if c.Issuer != "http://localhost:9999" {
					t.Errorf("issuer = %q", c.Issuer)
				}
			},
		},
		{
			name: "ok/redis-store",
			file: lines("issuer: https://id.example.com", "addr: :8080", redisStore, longSecret),
		},
		{
			name: "ok/redis-cluster-list",
			file: lines("issuer: https://id.example.com", "store: rediss://a:7000,b:7001,rediss://c:7002", longSecret),
		},
		{
			name: "ok/secret-hash-client",
			file: lines("clients:", "  - {id: api, secret_hash: "+validHash+", grant_types: [client_credentials, api_token]}"),
		},
		{
			name: "ok/argon2id-user-and-subjects",
			file: lines(
				"users: [{id: u1, username: ann, password_hash: '"+argon2Hash+"'}]",
				"sso_providers:",
				"  - id: corp_idp-2",
				"    issuer: http://127.0.0.1:5556/dex",
				"    client_id: stepup",
				"    scopes: [openid, email]",
				"    subjects: {'CgR1c2Vy.EgVsb2NhbA': u1}",
				"    max_session_age: 8h",
			),
			check: func(t *testing.T, c *Config) {
				p := c.SSOProviders[0]
				if p.Subjects["CgR1c2Vy.EgVsb2NhbA"] != "u1" || p.MaxSessionAge != Duration(8*time.Hour) {
					t.Errorf("provider = %+v", p)
				}
			},
		},
		{
			name: "ok/anchors-and-merge-keys",
			file: lines(
				"clients:",
				"  - &web {id: a, secret: s, redirect_uris: ['https://a.example.com/cb']}",
				"  - <<: *web",
				"    id: b",
			),
			check: func(t *testing.T, c *Config) {
				if len(c.Clients) != 2 || c.Clients[1].ID != "b" || c.Clients[1].Secret != "s" {
					t.Errorf("clients = %+v", c.Clients)
				}
			},
		},

		// Environment overrides.
		{
			name: "ok/env/scalar",
			file: lines(loopbackIss),
			env:  map[string]string{"STEPUP_ISSUER": "https://id.example.com", "STEPUP_ADDR": ":8443", "STEPUP_SECRET": "a: #not yaml, taken as is"},
			check: func(t *testing.T, c *Config) {
				if c.Issuer != "https://id.example.com" || c.Addr != ":8443" || c.Secret != "a: #not yaml, taken as is" {
					t.Errorf("issuer %q addr %q secret %q", c.Issuer, c.Addr, c.Secret)
				}
			},
		},
		{
			name: "ok/env/nested-scalar",
			file: lines("gateway: {client_id: gw, client_secret: from-file}"),
			env: map[string]string{
				"STEPUP_SMTP_ADDR":             "mail.internal:25",
				"STEPUP_SMTP_FROM":             "Stepup <no-reply@example.com>",
				"STEPUP_GATEWAY_CLIENT_SECRET": "from-env",
				"STEPUP_TOKENS_SIGNING_ALG":    "EdDSA",
			},
			check: func(t *testing.T, c *Config) {
				if c.SMTP.Addr != "mail.internal:25" || c.SMTP.From == "" || c.Gateway.ClientSecret != "from-env" || c.Gateway.ClientID != "gw" || c.Tokens.SigningAlg != "EdDSA" {
					t.Errorf("smtp %+v gateway %+v alg %q", c.SMTP, c.Gateway, c.Tokens.SigningAlg)
				}
			},
		},
		{
			name: "ok/env/duration-and-int",
			env: map[string]string{
				"STEPUP_TOKENS_ACCESS_TOKEN_TTL":        "90s",
				"STEPUP_LOGIN_FAILURE_WINDOW":           "1h30m",
				"STEPUP_LOGIN_MAX_FAILURES_PER_ACCOUNT": "3",
			},
			check: func(t *testing.T, c *Config) {
				if c.Tokens.AccessTokenTTL != Duration(90*time.Second) || c.Login.FailureWindow != Duration(90*time.Minute) || c.Login.MaxFailuresPerAccount != 3 {
					t.Errorf("tokens %+v login %+v", c.Tokens, c.Login)
				}
			},
		},
		{
			name: "ok/env/empty-value-restores-default",
			file: lines("tokens: {access_token_ttl: 2h}"),
			env:  map[string]string{"STEPUP_TOKENS_ACCESS_TOKEN_TTL": ""},
			check: func(t *testing.T, c *Config) {
				if c.Tokens.AccessTokenTTL != DefaultAccessTokenTTL {
					t.Errorf("access_token_ttl = %s", c.Tokens.AccessTokenTTL)
				}
			},
		},
		{
			name: "ok/env/list-as-json",
			file: lines("clients: [{id: from-file, public: true}]"),
			env: map[string]string{
				"STEPUP_CLIENTS": `[{"id": "cli", "public": true, "redirect_uris": ["http://127.0.0.1/callback"]}, {"id": "gw", "secret": "s", "grant_types": ["client_credentials"]}]`,
			},
			check: func(t *testing.T, c *Config) {
				if len(c.Clients) != 2 || c.Clients[0].ID != "cli" || c.Clients[1].GrantTypes[0] != "client_credentials" {
					t.Errorf("clients = %+v", c.Clients)
				}
			},
		},
		{
			name: "ok/env/list-as-yaml",
			file: lines(oneUser),
			env: map[string]string{
				"STEPUP_ORGS": "[{id: acme, members: [{user: u1}]}]",
			},
			check: func(t *testing.T, c *Config) {
				if len(c.Orgs) != 1 || c.Orgs[0].Members[0].Role != "member" {
					t.Errorf("orgs = %+v", c.Orgs)
				}
			},
		},
		{
			name: "fail/env/bad-duration",
			env:  map[string]string{"STEPUP_TOKENS_ACCESS_TOKEN_TTL": "soon"},
			want: []string{`STEPUP_TOKENS_ACCESS_TOKEN_TTL: tokens.access_token_ttl: "soon" is not a duration`},
		},
		{
			name: "fail/env/bad-int",
			env:  map[string]string{"STEPUP_LOGIN_MAX_FAILURES_PER_ADDRESS": "many"},
			want: []string{`STEPUP_LOGIN_MAX_FAILURES_PER_ADDRESS: login.max_failures_per_address: "many" is not a whole number`},
		},
		{
			name: "fail/env/list-unknown-key",
			env:  map[string]string{"STEPUP_USERS": `[{"id": "u1", "usernme": "ann", "password": "pw"}]`},
			want: []string{`STEPUP_USERS:1: users[0].usernme: unknown key; did you mean "username"?`},
		},
		{
			name: "fail/env/list-not-yaml",
			env:  map[string]string{"STEPUP_CLIENTS": `[{"id": "cli"`},
			want: []string{"STEPUP_CLIENTS:1: "},
		},
		{
			name: "fail/env/list-wrong-shape",
			env:  map[string]string{"STEPUP_SERVICES": `{"id": "app"}`},
			want: []string{"STEPUP_SERVICES:1: services: want a list, got a mapping"},
		},
		{
			name: "fail/env/validation-names-variable",
			file: lines(loopbackIss),
			env:  map[string]string{"STEPUP_ISSUER": "http://id.example.com"},
			want: []string{`STEPUP_ISSUER: issuer: "http://id.example.com" uses http on a host that is not loopback`},
		},
		{
			name: "fail/env/list-validation-names-variable",
			env:  map[string]string{"STEPUP_CLIENTS": `[{"id": "cli", "public": true, "redirect_uris": ["ftp://x"]}]`},
			want: []string{`STEPUP_CLIENTS:1: clients[0].redirect_uris[0]: "ftp://x" is not an http(s) URL`},
		},

		// Problems in the YAML itself.
		{
			name: "fail/yaml/unknown-top-level-key",
			file: lines(loopbackIss, "colour: blue"),
			want: []string{"stepup.yaml:2: colour: unknown key; known keys here: addr, admins, api, clients,"},
		},
		{
			name: "fail/yaml/unknown-nested-key",
			file: lines(
				"clients:",
				"  - id: cli",
				"    public: true",
				"    redirect_uri: http://127.0.0.1/cb",
			),
			want: []string{`stepup.yaml:4: clients[0].redirect_uri: unknown key; did you mean "redirect_uris"?`},
		},
		{
			name: "fail/yaml/unknown-key-in-section",
			file: lines("tokens:", "  access_token_ttl: 1h", "  refresh_ttl: 1h"),
			want: []string{"stepup.yaml:3: tokens.refresh_ttl: unknown key"},
		},
		{
			name: "fail/yaml/every-unknown-key-reported",
			file: lines("isuer: x", "smtp: {adr: x}"),
			want: []string{
				`stepup.yaml:1: isuer: unknown key; did you mean "issuer"?`,
				`stepup.yaml:2: smtp.adr: unknown key; did you mean "addr"?`,
			},
		},
		{
			name: "fail/yaml/repeated-key",
			file: lines(loopbackIss, "addr: 127.0.0.1:8080", loopbackIss),
			want: []string{"stepup.yaml:3: issuer: repeated; first given on line 1"},
		},
		{
			name: "fail/yaml/not-a-bool",
			file: lines("clients:", "  - id: cli", "    public: maybe"),
			want: []string{`stepup.yaml:3: clients[0].public: "maybe" is not true or false`},
		},
		{
			name: "fail/yaml/not-an-int",
			file: lines("login:", "  max_failures_per_account: five"),
			want: []string{`stepup.yaml:2: login.max_failures_per_account: "five" is not a whole number`},
		},
		{
			name: "fail/yaml/duration-without-unit",
			file: lines("tokens:", "  access_token_ttl: 3600"),
			want: []string{`stepup.yaml:2: tokens.access_token_ttl: 3600 has no unit`},
		},
		{
			name: "fail/yaml/not-a-duration",
			file: lines("tokens: {session_ttl: a day}"),
			want: []string{`stepup.yaml:1: tokens.session_ttl: "a day" is not a duration`},
		},
		{
			name: "fail/yaml/scalar-for-list",
			file: lines("clients:", "  - id: cli", "    redirect_uris: http://127.0.0.1/cb"),
			want: []string{`stepup.yaml:3: clients[0].redirect_uris: want a list, got the value "http://127.0.0.1/cb"`},
		},
		{
			name: "fail/yaml/list-for-section",
			file: lines("smtp: [127.0.0.1:25]"),
			want: []string{"stepup.yaml:1: smtp: want a mapping of keys, got a list"},
		},
		{
			name: "fail/yaml/list-for-scalar",
			file: lines("issuer: [a, b]"),
			want: []string{"stepup.yaml:1: issuer: want a single value, got a list"},
		},
		{
			name: "fail/yaml/syntax",
			file: lines("clients:", "  - id: cli", "   public: true"),
			// yaml.v3 reports the line where the broken block starts.
			want: []string{"stepup.yaml:1: did not find expected '-' indicator"},
		},
		{
			name: "fail/yaml/second-document",
			file: lines(loopbackIss, "---", "addr: 127.0.0.1:9000"),
			want: []string{"stepup.yaml:2: a second YAML document"},
		},

		// Server settings.
		{
			name: "fail/issuer/not-http",
			file: lines("issuer: ftp://id.example.com"),
			want: []string{`stepup.yaml:1: issuer: "ftp://id.example.com" is not an http(s) URL`},
		},
		{
			name: "fail/issuer/relative",
			file: lines("issuer: /idp"),
			want: []string{`stepup.yaml:1: issuer: "/idp" is not an http(s) URL`},
		},
		{
			name: "fail/issuer/http-on-public-host",
			file: lines("issuer: http://id.example.com"),
			want: []string{`stepup.yaml:1: issuer: "http://id.example.com" uses http on a host that is not loopback`},
		},
		{
			name: "fail/issuer/query",
			file: lines("issuer: https://id.example.com/?tenant=a"),
			want: []string{"stepup.yaml:1: issuer: ", "must not have a ?query"},
		},
		{
			name: "fail/issuer/fragment",
			file: lines("issuer: 'https://id.example.com/#top'"),
			want: []string{"stepup.yaml:1: issuer: ", "must not have a #fragment"},
		},
		{
			name: "fail/issuer/missing-behind-public-addr",
			file: lines("addr: 0.0.0.0:8080"),
			want: []string{"issuer: is required unless addr is a loopback address"},
		},
		{
			name: "fail/addr/no-port",
			file: lines(loopbackIss, "addr: localhost"),
			want: []string{`stepup.yaml:2: addr: "localhost" is not host:port`},
		},
		{
			name: "fail/addr/bad-port",
			file: lines(loopbackIss, "addr: '127.0.0.1:http'"),
			want: []string{`stepup.yaml:2: addr: "127.0.0.1:http" has no valid port number`},
		},
		{
			name:   "fail/store/scheme-without-leaking-password",
			file:   lines("store: mysql://root:hunter2@db/stepup", longSecret),
			want:   []string{`stepup.yaml:1: store: scheme "mysql" is not supported`},
			reject: []string{"hunter2"},
		},
		{
			name: "fail/store/cluster-entry-scheme",
			file: lines("store: redis://a:7000,http://b:7001", longSecret),
			want: []string{`stepup.yaml:1: store: scheme "http" is not supported`},
		},
		{
			name: "fail/store/not-a-url",
			file: lines("store: redis-box:6379", longSecret),
			want: []string{`stepup.yaml:1: store: want "memory" or a redis:// or rediss:// URL`},
		},
		{
			name: "fail/secret/missing-with-redis",
			file: lines(redisStore),
			want: []string{"secret: is required with a shared store"},
		},
		{
			name: "fail/secret/short",
			file: lines(redisStore, "secret: tooshort"),
			want: []string{"stepup.yaml:2: secret: is 8 characters long; use at least 16"},
		},

		// Clients.
		{
			name: "fail/clients/redirect-not-http",
			file: lines(
				"clients:",
				"  - id: cli",
				"    public: true",
				`    redirect_uris: ["http://127.0.0.1/cb"]`,
				"  - id: web",
				"    secret: web-secret",
				"    redirect_uris:",
				"      - ftp://x",
			),
			want: []string{`stepup.yaml:8: clients[1].redirect_uris[0]: "ftp://x" is not an http(s) URL`},
		},
		{
			name: "fail/clients/redirect-relative",
			file: lines("clients: [{id: cli, public: true, redirect_uris: [/cb]}]"),
			want: []string{`stepup.yaml:1: clients[0].redirect_uris[0]: "/cb" is not an http(s) URL`},
		},
		{
			name: "fail/clients/redirect-fragment",
			file: lines("clients: [{id: cli, public: true, redirect_uris: ['http://127.0.0.1/cb#x']}]"),
			want: []string{`stepup.yaml:1: clients[0].redirect_uris[0]: "http://127.0.0.1/cb#x" must not have a #fragment`},
		},
		{
			name: "fail/clients/redirect-http-public-host",
			file: lines("clients: [{id: web, secret: s, redirect_uris: ['http://app.example.com/cb']}]"),
			want: []string{`stepup.yaml:1: clients[0].redirect_uris[0]: "http://app.example.com/cb" uses http`},
		},
		{
			name: "fail/clients/post-logout-redirect",
			file: lines("clients:", "  - id: web", "    secret: s", "    redirect_uris: ['https://app.example.com/cb']", "    post_logout_redirect_uris: ['app.example.com/bye']"),
			want: []string{`stepup.yaml:5: clients[0].post_logout_redirect_uris[0]: "app.example.com/bye" is not an http(s) URL`},
		},
		{
			name: "fail/clients/id-missing",
			file: lines("clients:", "  - secret: s", "    grant_types: [client_credentials]"),
			want: []string{"stepup.yaml:2: clients[0].id: is required"},
		},
		{
			name: "fail/clients/id-repeated",
			file: lines("clients:", "  - "+cliClient, "  - "+cliClient),
			want: []string{`stepup.yaml:3: clients[1].id: client id "cli" is already used by clients[0].id`},
		},
		{
			name: "fail/clients/public-with-secret",
			file: lines("clients:", "  - id: cli", "    public: true", "    secret: s", "    redirect_uris: ['http://127.0.0.1/cb']"),
			want: []string{"stepup.yaml:4: clients[0].secret: a public client has no secret"},
		},
		{
			name: "fail/clients/public-with-secret-hash",
			file: lines("clients: [{id: cli, public: true, secret_hash: " + validHash + ", redirect_uris: ['http://127.0.0.1/cb']}]"),
			want: []string{"stepup.yaml:1: clients[0].secret_hash: a public client has no secret"},
		},
		{
			name: "fail/clients/confidential-without-secret",
			file: lines("clients:", "  - id: gw", "    grant_types: [client_credentials]"),
			want: []string{"stepup.yaml:2: clients[0]: a confidential client needs secret or secret_hash"},
		},
		{
			name: "fail/clients/secret-and-hash",
			file: lines("clients: [{id: gw, secret: s, secret_hash: " + validHash + ", grant_types: [client_credentials]}]"),
			want: []string{"stepup.yaml:1: clients[0].secret_hash: give secret or secret_hash, not both"},
		},
		{
			name: "fail/clients/secret-hash-not-sha256-hex",
			file: lines("clients: [{id: gw, secret_hash: abc123, grant_types: [client_credentials]}]"),
			want: []string{"stepup.yaml:1: clients[0].secret_hash: must be 64 hex characters"},
		},
		{
			name: "fail/clients/unknown-grant-type",
			file: lines("clients:", "  - id: web", "    secret: s", "    redirect_uris: ['https://app.example.com/cb']", "    grant_types: [authorization_code, implicit]"),
			want: []string{`stepup.yaml:5: clients[0].grant_types[1]: "implicit" is not supported`},
		},
		{
			name: "fail/clients/code-grant-without-redirect",
			file: lines("clients: [{id: web, secret: s, grant_types: [authorization_code]}]"),
			want: []string{"stepup.yaml:1: clients[0].redirect_uris: the authorization_code grant needs at least one redirect URI"},
		},
		{
			name: "fail/clients/client-credentials-for-public-client",
			file: lines("clients: [{id: cli, public: true, grant_types: [client_credentials]}]"),
			want: []string{"stepup.yaml:1: clients[0].grant_types: client_credentials needs a confidential client"},
		},
		{
			name: "fail/clients/response-type",
			file: lines("clients: [{id: cli, public: true, redirect_uris: ['http://127.0.0.1/cb'], response_types: [code, token]}]"),
			want: []string{`stepup.yaml:1: clients[0].response_types[1]: "token" is not supported; only "code" is`},
		},
		{
			name: "fail/clients/auth-method-none-for-confidential",
			file: lines("clients: [{id: gw, secret: s, grant_types: [client_credentials], token_endpoint_auth_method: none}]"),
			want: []string{"stepup.yaml:1: clients[0].token_endpoint_auth_method: none is for public clients"},
		},
		{
			name: "fail/clients/auth-method-secret-for-public",
			file: lines("clients: [{id: cli, public: true, redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: client_secret_post}]"),
			want: []string{"stepup.yaml:1: clients[0].token_endpoint_auth_method: a public client has no secret to send; use none"},
		},
		{
			name: "fail/clients/auth-method-unknown",
			file: lines("clients: [{id: gw, secret: s, grant_types: [client_credentials], token_endpoint_auth_method: private_key_jwt}]"),
			want: []string{`stepup.yaml:1: clients[0].token_endpoint_auth_method: "private_key_jwt" is not supported`},
		},
		{
			name: "fail/clients/id-token-alg",
			file: lines("clients: [{id: cli, public: true, redirect_uris: ['http://127.0.0.1/cb'], id_token_signed_response_alg: HS256}]"),
			want: []string{`stepup.yaml:1: clients[0].id_token_signed_response_alg: "HS256" is not supported; use ES256, RS256, EdDSA`},
		},
		{
			name: "fail/clients/scope-with-space",
			file: lines("clients: [{id: cli, public: true, redirect_uris: ['http://127.0.0.1/cb'], scopes: [openid, 'a b']}]"),
			want: []string{`stepup.yaml:1: clients[0].scopes[1]: "a b" is not a scope name`},
		},

		// Users.
		{
			name: "fail/users/id-missing",
			file: lines("users:", "  - {username: ann, password: pw}"),
			want: []string{"stepup.yaml:2: users[0].id: is required"},
		},
		{
			name: "fail/users/id-repeated",
			file: lines("users:", "  - {id: u1, username: ann, password: pw}", "  - {id: u1, username: bob, password: pw}"),
			want: []string{`stepup.yaml:3: users[1].id: user id "u1" is already used by users[0].id`},
		},
		{
			name: "fail/users/username-missing",
			file: lines("users: [{id: u1, password: pw}]"),
			want: []string{"stepup.yaml:1: users[0].username: is required"},
		},
		{
			name: "fail/users/username-repeated",
			file: lines("users:", "  - {id: u1, username: ann, password: pw}", "  - {id: u2, username: ann, password: pw}"),
			want: []string{`stepup.yaml:3: users[1].username: username "ann" is already used by users[0].username`},
		},
		{
			name: "fail/users/no-password",
			file: lines("users:", "  - id: u1", "    username: ann"),
			want: []string{"stepup.yaml:2: users[0]: give password or password_hash"},
		},
		{
			name: "fail/users/password-and-hash",
			file: lines("users: [{id: u1, username: ann, password: pw, password_hash: '" + argon2Hash + "'}]"),
			want: []string{"stepup.yaml:1: users[0].password_hash: give password or password_hash, not both"},
		},
		{
			name: "fail/users/hash-not-argon2id",
			file: lines("users:", "  - id: u1", "    username: ann", "    password_hash: '$2a$10$abcdefghijklmnopqrstuv'"),
			want: []string{"stepup.yaml:4: users[0].password_hash: must be an argon2id hash starting with $argon2id$"},
		},
		{
			name: "fail/users/email-without-at",
			file: lines("users: [{id: u1, username: ann, password: pw, email: ann.example.com}]"),
			want: []string{`stepup.yaml:1: users[0].email: "ann.example.com" is not an email address`},
		},
		{
			name: "fail/users/email-repeated",
			file: lines("users:", "  - {id: u1, username: ann, password: pw, email: ann@example.com}", "  - {id: u2, username: bob, password: pw, email: Ann@Example.com}"),
			want: []string{`stepup.yaml:3: users[1].email: email "ann@example.com" is already used by users[0].email`},
		},

		// Organizations.
		{
			name: "fail/orgs/id-missing",
			file: lines("orgs: [{name: ACME}]"),
			want: []string{"stepup.yaml:1: orgs[0].id: is required"},
		},
		{
			name: "fail/orgs/id-repeated",
			file: lines("orgs:", "  - {id: acme}", "  - {id: acme}"),
			want: []string{`stepup.yaml:3: orgs[1].id: org id "acme" is already used by orgs[0].id`},
		},
		{
			name: "fail/orgs/member-unknown-user",
			file: lines(oneUser, "orgs:", "  - id: acme", "    members:", "      - {user: u1, role: owner}", "      - {user: u_bob, role: member}"),
			want: []string{`stepup.yaml:6: orgs[0].members[1].user: no user with id "u_bob"`},
		},
		{
			name: "fail/orgs/member-repeated",
			file: lines(oneUser, "orgs:", "  - id: acme", "    members:", "      - {user: u1, role: owner}", "      - {user: u1, role: member}"),
			want: []string{`stepup.yaml:6: orgs[0].members[1].user: member "u1" is already used by orgs[0].members[0].user`},
		},
		{
			name: "fail/orgs/member-role",
			file: lines(oneUser, "orgs: [{id: acme, members: [{user: u1, role: superuser}]}]"),
			want: []string{`stepup.yaml:2: orgs[0].members[0].role: "superuser" is not a role; use owner, admin or member`},
		},
		{
			name: "fail/orgs/sso-provider-unknown",
			file: lines("orgs:", "  - id: acme", "    sso_provider: acme"),
			want: []string{`stepup.yaml:3: orgs[0].sso_provider: "acme" is not the id of an sso_providers entry`},
		},

		// SSO providers.
		{
			name: "fail/sso/id-pattern",
			file: lines("sso_providers:", "  - id: Acme Corp", "    issuer: https://idp.acme.example", "    client_id: stepup"),
			want: []string{`stepup.yaml:2: sso_providers[0].id: "Acme Corp" must be lower-case letters`},
		},
		{
			name: "fail/sso/id-missing",
			file: lines("sso_providers: [{issuer: https://idp.acme.example, client_id: stepup}]"),
			want: []string{"stepup.yaml:1: sso_providers[0].id: is required"},
		},
		{
			name: "fail/sso/id-repeated",
			file: lines("sso_providers:", "  - {id: acme, issuer: https://idp.acme.example, client_id: a}", "  - {id: acme, issuer: https://idp2.acme.example, client_id: b}"),
			want: []string{`stepup.yaml:3: sso_providers[1].id: provider id "acme" is already used by sso_providers[0].id`},
		},
		{
			name: "fail/sso/issuer-http-public-host",
			file: lines("sso_providers:", "  - id: acme", "    issuer: http://idp.acme.example", "    client_id: stepup"),
			want: []string{`stepup.yaml:3: sso_providers[0].issuer: "http://idp.acme.example" uses http`},
		},
		{
			name: "fail/sso/issuer-missing",
			file: lines("sso_providers: [{id: acme, client_id: stepup}]"),
			want: []string{"stepup.yaml:1: sso_providers[0].issuer: is required"},
		},
		{
			name: "fail/sso/client-id-missing",
			file: lines("sso_providers:", "  - id: acme", "    issuer: https://idp.acme.example"),
			want: []string{"stepup.yaml:2: sso_providers[0].client_id: is required"},
		},
		{
			name: "fail/sso/scopes-without-openid",
			file: lines("sso_providers:", "  - id: acme", "    issuer: https://idp.acme.example", "    client_id: stepup", "    scopes: [email]"),
			want: []string{"stepup.yaml:5: sso_providers[0].scopes: must include openid"},
		},
		{
			name: "fail/sso/subject-unknown-user",
			file: lines(oneUser, "sso_providers:", "  - id: acme", "    issuer: https://idp.acme.example", "    client_id: stepup", "    subjects:", "      'sub.1': u1", "      'sub.2': u_bob"),
			want: []string{`stepup.yaml:8: sso_providers[0].subjects["sub.2"]: no user with id "u_bob"`},
		},
		{
			name: "fail/sso/provisioning-with-subjects",
			file: lines(oneUser, "sso_providers:", "  - id: acme", "    issuer: https://idp.acme.example", "    client_id: stepup", "    subjects: {'s': u1}", "    allowed_domains: [acme.example]"),
			want: []string{`stepup.yaml:7: sso_providers[0].allowed_domains: cannot be used with subjects`},
		},
		{
			name: "fail/sso/join-role",
			file: lines("sso_providers:", "  - id: acme", "    issuer: https://idp.acme.example", "    client_id: stepup", "    allowed_domains: [Acme.example]", "    join_org: acme", "    join_role: boss"),
			want: []string{`stepup.yaml:5: sso_providers[0].allowed_domains[0]: "Acme.example" is not a lower-case domain`, `sso_providers[0].join_role: "boss" is not a role`},
		},
		{
			name: "fail/sso/max-session-age-negative",
			file: lines("sso_providers:", "  - id: acme", "    issuer: https://idp.acme.example", "    client_id: stepup", "    max_session_age: -1h"),
			want: []string{"stepup.yaml:5: sso_providers[0].max_session_age: must be positive, got -1h0m0s"},
		},

		// Services.
		{
			name: "fail/services/id-missing",
			file: lines(oneUser, oneOrg, "services: [{org: acme}]"),
			want: []string{"stepup.yaml:3: services[0].id: is required"},
		},
		{
			name: "fail/services/id-repeated",
			file: lines(oneUser, oneOrg, "services:", "  - {id: app, org: acme}", "  - {id: app, org: acme}"),
			want: []string{`stepup.yaml:5: services[1].id: service id "app" is already used by services[0].id`},
		},
		{
			name: "fail/services/org-unknown",
			file: lines("services:", "  - id: app", "    org: globex"),
			want: []string{`stepup.yaml:3: services[0].org: "globex" is not the id of an orgs entry`},
		},
		{
			name: "fail/services/org-missing",
			file: lines("services: [{id: app}]"),
			want: []string{"stepup.yaml:1: services[0].org: is required"},
		},
		{
			name: "ok/services/ssh-address",
			file: lines(oneUser, oneOrg, "services:", "  - {id: app, org: acme, ssh_address: 'gw.example.com:2222'}",
				"  - {id: v6, org: acme, ssh_address: '[::1]:2200'}", "  - {id: plain, org: acme}"),
			check: func(t *testing.T, c *Config) {
				if got := []string{c.Services[0].SSHAddress, c.Services[1].SSHAddress, c.Services[2].SSHAddress}; !slices.Equal(got, []string{"gw.example.com:2222", "[::1]:2200", ""}) {
					t.Errorf("ssh_address = %q", got)
				}
			},
		},
		{
			name: "fail/services/ssh-address",
			file: lines(oneUser, oneOrg, "services:",
				"  - {id: a, org: acme, ssh_address: gw.example.com}",
				"  - {id: b, org: acme, ssh_address: ':2222'}",
				"  - {id: c, org: acme, ssh_address: 'gw.example.com:0'}",
				"  - {id: d, org: acme, ssh_address: 'gw.example.com:ssh'}",
				"  - {id: e, org: acme, ssh_address: 'alice@gw.example.com:2222'}",
			),
			want: []string{
				`stepup.yaml:4: services[0].ssh_address: "gw.example.com" is not host:port; want host:port where the service's gateway listens`,
				`stepup.yaml:5: services[1].ssh_address: ":2222" names no host`,
				`stepup.yaml:6: services[2].ssh_address: "gw.example.com:0" has no port from 1 to 65535`,
				`stepup.yaml:7: services[3].ssh_address: "gw.example.com:ssh" has no port from 1 to 65535`,
				`stepup.yaml:8: services[4].ssh_address: "alice@gw.example.com:2222": "alice@gw.example.com" is not a host name or address`,
			},
		},
		{
			name: "fail/services/ssh-address-from-env",
			env:  map[string]string{"STEPUP_SERVICES": `[{"id": "app", "org": "acme", "ssh_address": "gw.example.com"}]`},
			file: lines(oneUser, oneOrg),
			want: []string{`STEPUP_SERVICES:1: services[0].ssh_address: "gw.example.com" is not host:port`},
		},

		// Who may use the API.
		{
			name: "fail/clients/id-is-a-user-id",
			file: lines(oneUser, "clients:", "  - {id: u1, secret: s3cret-0123456789abcdef, grant_types: [client_credentials]}"),
			want: []string{`stepup.yaml:3: clients[0].id: "u1" is also a user id; give the client or the user another id`},
		},
		{
			name: "fail/admins/unknown-user",
			file: lines(oneUser, "admins: [u1, u_zed]"),
			want: []string{`stepup.yaml:2: admins[1]: no user with id "u_zed"`},
		},
		{
			name: "fail/api/unknown-client",
			file: lines("clients:", "  - "+cliClient, "api:", "  clients: [cli, console]"),
			want: []string{`stepup.yaml:4: api.clients[1]: "console" is not the id of a clients entry`},
		},
		{
			name: "fail/api/manage-client-not-first-party",
			file: lines("clients:", "  - "+cliClient, "  - {id: svc, secret: s3cret-0123456789abcdef, grant_types: [client_credentials]}",
				"api:", "  clients: [cli]", "  manage_clients: [svc]"),
			want: []string{`stepup.yaml:6: api.manage_clients[0]: "svc" is not in api.clients: a client that manages must be first-party`},
		},
		{
			name: "fail/api/token-ttl-negative",
			file: lines("api:", "  token_ttl: -1h"),
			want: []string{`stepup.yaml:2: api.token_ttl: must be positive, got -1h0m0s`},
		},
		{
			name: "ok/api",
			file: lines("clients:", "  - "+cliClient, "api:", "  audience: [https://api.example.com]", "  clients: [cli]", "  manage_clients: [cli]",
				"  manage_scope: stepup.manage", "  token_ttl: 720h"),
		},

		// Tokens, login throttling and mail.
		{
			name: "fail/tokens/negative-duration",
			file: lines("tokens:", "  access_token_ttl: 1h", "  refresh_token_ttl: -1h", "  key_rotation: -5m"),
			want: []string{
				"stepup.yaml:3: tokens.refresh_token_ttl: must be positive, got -1h0m0s",
				"stepup.yaml:4: tokens.key_rotation: must be positive, got -5m0s",
			},
		},
		{
			name: "fail/tokens/signing-alg",
			file: lines("tokens: {signing_alg: HS256}"),
			want: []string{`stepup.yaml:1: tokens.signing_alg: "HS256" is not supported; use ES256, RS256, EdDSA`},
		},
		{
			name: "fail/login/negative",
			file: lines("login:", "  max_failures_per_account: -1", "  max_failures_per_address: -2", "  failure_window: -1m"),
			want: []string{
				"stepup.yaml:2: login.max_failures_per_account: must be positive, got -1",
				"stepup.yaml:3: login.max_failures_per_address: must be positive, got -2",
				"stepup.yaml:4: login.failure_window: must be positive, got -1m0s",
			},
		},
		{
			name: "fail/smtp/addr",
			file: lines("smtp: {addr: mail.example.com, from: no-reply@example.com}"),
			want: []string{`stepup.yaml:1: smtp.addr: "mail.example.com" is not host:port`},
		},
		{
			name: "fail/smtp/from-missing",
			file: lines("smtp:", "  addr: 127.0.0.1:1025"),
			want: []string{"stepup.yaml:1: smtp.from: is required when smtp.addr is set"},
		},
		{
			name: "fail/smtp/from-invalid",
			file: lines("smtp:", "  addr: 127.0.0.1:1025", "  from: Stepup no-reply"),
			want: []string{`stepup.yaml:3: smtp.from: "Stepup no-reply" is not a mail address`},
		},
		{
			name: "ok/trusted-proxies",
			file: lines("trusted_proxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8']", "metrics: {token: scrape-me}"),
			check: func(t *testing.T, c *Config) {
				if len(c.TrustedProxies) != 3 || c.Metrics.Token != "scrape-me" {
					t.Errorf("trusted_proxies = %q, metrics = %+v", c.TrustedProxies, c.Metrics)
				}
			},
		},
		{
			name: "fail/trusted-proxies",
			file: lines("trusted_proxies:", "  - 10.0.0.0/8", "  - lb.internal"),
			want: []string{`stepup.yaml:3: trusted_proxies[1]: "lb.internal" is not an IP address or CIDR prefix`},
		},
		{
			name: "fail/trusted-proxies/env",
			env:  map[string]string{"STEPUP_TRUSTED_PROXIES": "[10.0.0.0/33]"},
			want: []string{`STEPUP_TRUSTED_PROXIES:1: trusted_proxies[0]: "10.0.0.0/33" is not an IP address`},
		},
		{
			name: "fail/validation/all-problems-reported",
			file: lines("issuer: ftp://x", "users: [{id: u1}]", "tokens: {signing_alg: none}"),
			want: []string{
				"stepup.yaml:1: issuer: ",
				"stepup.yaml:2: users[0].username: is required",
				"stepup.yaml:2: users[0]: give password or password_hash",
				"stepup.yaml:3: tokens.signing_alg: ",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.file, tc.env)
			if strings.HasPrefix(tc.name, "ok/") {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded; want an error containing %q", tc.want)
			}
			if c != nil {
				t.Errorf("Load returned a config along with its error")
			}
			if _, ok := errors.AsType[*FieldError](err); !ok {
				t.Errorf("error %q holds no *FieldError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			for _, r := range tc.reject {
				if strings.Contains(err.Error(), r) {
					t.Errorf("error contains %q:\n%v", r, err)
				}
			}
		})
	}
}

func TestDesignExample(t *testing.T) {
	c, err := Load("testdata/design-example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != "http://127.0.0.1:8080" || c.Addr != "127.0.0.1:8080" || c.Store != "memory" {
		t.Errorf("server settings: %q %q %q", c.Issuer, c.Addr, c.Store)
	}
	wantClients := []Client{
		{
			ID: "stepup-cli", Public: true,
			RedirectURIs:            []string{"http://127.0.0.1/callback"},
			GrantTypes:              []string{"authorization_code", "refresh_token"},
			ResponseTypes:           []string{"code"},
			Scopes:                  []string{"openid", "offline_access", "profile", "email"},
			TokenEndpointAuthMethod: "none",
		},
		{
			ID: "console", Secret: "console-secret-for-tests",
			RedirectURIs:            []string{"https://console.example.com/callback"},
			GrantTypes:              []string{"authorization_code", "refresh_token"},
			ResponseTypes:           []string{"code"},
			Scopes:                  []string{"openid", "offline_access", "profile", "email"},
			TokenEndpointAuthMethod: "client_secret_basic",
		},
		{
			ID: "stepup-gateway", Secret: "gateway-secret-for-tests",
			GrantTypes:              []string{"client_credentials"},
			ResponseTypes:           []string{"code"},
			Scopes:                  []string{"access.read"},
			TokenEndpointAuthMethod: "client_secret_basic",
		},
	}
	if !reflect.DeepEqual(c.Clients, wantClients) {
		t.Errorf("clients:\n got %+v\nwant %+v", c.Clients, wantClients)
	}
	wantUsers := []User{{ID: "u_alice", Username: "alice", Email: "alice@example.com", Password: "correct horse battery staple"}}
	if !reflect.DeepEqual(c.Users, wantUsers) {
		t.Errorf("users = %+v", c.Users)
	}
	wantOrgs := []Org{{ID: "acme", Name: "ACME", Members: []Member{{User: "u_alice", Role: "owner"}}}}
	if !reflect.DeepEqual(c.Orgs, wantOrgs) {
		t.Errorf("orgs = %+v", c.Orgs)
	}
	wantProviders := []SSOProvider{{
		ID: "acme", Issuer: "https://idp.acme.example", ClientID: "stepup-at-acme", ClientSecret: "acme-upstream-secret",
		Scopes: []string{"openid", "email", "profile"},
	}}
	if !reflect.DeepEqual(c.SSOProviders, wantProviders) {
		t.Errorf("sso_providers = %+v", c.SSOProviders)
	}
	if want := []Service{{ID: "abcdefg123456-main-bvxea6i--app", Org: "acme"}}; !reflect.DeepEqual(c.Services, want) {
		t.Errorf("services = %+v", c.Services)
	}
	if want := (Gateway{ClientID: "stepup-gateway", ClientSecret: "gateway-secret-for-tests"}); c.Gateway != want {
		t.Errorf("gateway = %+v", c.Gateway)
	}
	if want := (SMTP{Addr: "127.0.0.1:1025", From: "Stepup <no-reply@example.com>"}); c.SMTP != want {
		t.Errorf("smtp = %+v", c.SMTP)
	}
}

func TestSetDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	wantTokens := Tokens{
		AccessTokenTTL:  Duration(time.Hour),
		IDTokenTTL:      Duration(time.Hour),
		RefreshTokenTTL: Duration(720 * time.Hour),
		AuthCodeTTL:     Duration(10 * time.Minute),
		SessionTTL:      Duration(24 * time.Hour),
		SigningAlg:      "ES256",
		KeyRotation:     Duration(720 * time.Hour),
	}
	if c.Tokens != wantTokens {
		t.Errorf("tokens:\n got %+v\nwant %+v", c.Tokens, wantTokens)
	}
	if want := (Login{MaxFailuresPerAccount: 5, MaxFailuresPerAddress: 50, FailureWindow: Duration(15 * time.Minute)}); c.Login != want {
		t.Errorf("login = %+v", c.Login)
	}
	if c.Store != "memory" || c.Addr != "127.0.0.1:8080" || c.Issuer != "http://127.0.0.1:8080" || c.Secret != "" {
		t.Errorf("server settings: %q %q %q %q", c.Store, c.Addr, c.Issuer, c.Secret)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}

	// Set values survive, and a second call changes nothing.
	c = Config{Addr: "0.0.0.0:80", Tokens: Tokens{AccessTokenTTL: Duration(time.Minute), SigningAlg: "RS256"}}
	c.Clients = []Client{{ID: "gw", Secret: "s", GrantTypes: []string{}}}
	c.SetDefaults()
	before := c
	c.SetDefaults()
	if c.Issuer != "" || c.Tokens.AccessTokenTTL != Duration(time.Minute) || c.Tokens.SigningAlg != "RS256" {
		t.Errorf("SetDefaults overwrote set values: %+v", c)
	}
	if len(c.Clients[0].GrantTypes) != 0 || c.Clients[0].TokenEndpointAuthMethod != "client_secret_basic" {
		t.Errorf("client = %+v", c.Clients[0])
	}
	if !reflect.DeepEqual(before, c) {
		t.Errorf("second SetDefaults changed the config")
	}
}

func TestEnvNames(t *testing.T) {
	seen := map[string]string{}
	var names []string
	for _, s := range envSettings() {
		if prev, ok := seen[s.name]; ok {
			t.Errorf("%s serves both %s and %s", s.name, prev, s.path)
		}
		seen[s.name] = s.path
		names = append(names, s.name)
	}
	for _, want := range []string{
		"STEPUP_ISSUER", "STEPUP_ADDR", "STEPUP_STORE", "STEPUP_SECRET",
		"STEPUP_CLIENTS", "STEPUP_USERS", "STEPUP_ORGS", "STEPUP_SSO_PROVIDERS", "STEPUP_SERVICES",
		"STEPUP_GATEWAY_CLIENT_ID", "STEPUP_GATEWAY_CLIENT_SECRET",
		"STEPUP_SMTP_ADDR", "STEPUP_SMTP_FROM", "STEPUP_SMTP_USERNAME", "STEPUP_SMTP_PASSWORD",
		"STEPUP_TOKENS_ACCESS_TOKEN_TTL", "STEPUP_TOKENS_ID_TOKEN_TTL", "STEPUP_TOKENS_REFRESH_TOKEN_TTL",
		"STEPUP_TOKENS_AUTH_CODE_TTL", "STEPUP_TOKENS_SESSION_TTL", "STEPUP_TOKENS_SIGNING_ALG", "STEPUP_TOKENS_KEY_ROTATION",
		"STEPUP_LOGIN_MAX_FAILURES_PER_ACCOUNT", "STEPUP_LOGIN_MAX_FAILURES_PER_ADDRESS", "STEPUP_LOGIN_FAILURE_WINDOW",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("no variable %s; have %v", want, names)
		}
	}
}

func TestParseKeepsValuesUnvalidated(t *testing.T) {
	c, err := Parse([]byte(lines("issuer: ftp://x", "tokens: {access_token_ttl: 90s}")), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != "ftp://x" || c.Tokens.AccessTokenTTL != Duration(90*time.Second) || c.Tokens.IDTokenTTL != 0 {
		t.Errorf("Parse = %+v", c)
	}
	err = c.Validate()
	fe, ok := errors.AsType[*FieldError](err)
	if !ok || fe.Source != "x.yaml" || fe.Line != 1 || fe.Path != "issuer" {
		t.Errorf("Validate = %#v", err)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := &Config{Issuer: "https://id.example.com", Clients: []Client{{ID: "web", Secret: "s", RedirectURIs: []string{"ftp://x"}}}}
	c.SetDefaults()
	err := c.Validate()
	if err == nil || err.Error() != `clients[0].redirect_uris[0]: "ftp://x" is not an http(s) URL` {
		t.Errorf("Validate = %v", err)
	}
}

func TestDurationYAML(t *testing.T) {
	in := struct {
		D Duration `yaml:"d"`
	}{Duration(90 * time.Minute)}
	out, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "d: 1h30m0s\n" {
		t.Errorf("Marshal = %q", out)
	}
	in.D = 0
	if err := yaml.Unmarshal(out, &in); err != nil || in.D != Duration(90*time.Minute) {
		t.Errorf("Unmarshal = %v, %v", in.D, err)
	}
}

func TestParentPath(t *testing.T) {
	for p, want := range map[string]string{
		`clients[1].redirect_uris[0]`:         `clients[1].redirect_uris`,
		`clients[1]`:                          `clients`,
		`sso_providers[0].subjects["a.b[c"]`:  `sso_providers[0].subjects`,
		`sso_providers[0].subjects["a\"b.c"]`: `sso_providers[0].subjects`,
		`issuer`:                              ``,
	} {
		if got, _ := parentPath(p); got != want {
			t.Errorf("parentPath(%s) = %q, want %q", p, got, want)
		}
	}
}

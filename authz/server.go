// Package authz is the authorization server: fosite composed for the grants
// Stepup supports, its HTTP endpoints and pages, login sessions, and the
// storage they share across replicas.
package authz

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepup-dev/stepup/authz/directory"
	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/seal"
	"github.com/stepup-dev/stepup/mfa"
	"github.com/stepup-dev/stepup/tokens"
)

// Config is everything the server needs. Zero values mean the defaults
// noted on each field.
type Config struct {
	// Issuer is the server's public base URL; required.
	Issuer string
	// Store holds run-time state; required.
	Store storage.Store
	// Secret seals keys at rest and keys token HMACs; at least 16 bytes.
	Secret  string
	Clients []Client
	Users   []User
	Orgs    []Org
	// SSOProviders are the upstream providers people can log in through.
	SSOProviders []SSOProvider
	// Services are what the SSH gateway protects; members of a service's
	// organization learn where its gateway listens (routeServices).
	Services []Service

	// Mailer sends MFA reminders; nil writes them to the log.
	Mailer   mfa.Mailer
	MailFrom string // "Stepup <no-reply@…>"; defaults to no-reply at the issuer's host
	// ReminderInterval is the least time between two reminders to one
	// member.
	ReminderInterval time.Duration // 24h
	// MaxLiveCertificates bounds how many unexpired SSH certificates one
	// person may hold, which bounds their revocation ledger. Default 500.
	MaxLiveCertificates int

	AccessTokenTTL  time.Duration // 1h
	IDTokenTTL      time.Duration // 1h
	RefreshTokenTTL time.Duration // 30 days
	AuthCodeTTL     time.Duration // 10m
	SessionTTL      time.Duration // 24h: how long a browser stays logged in
	// DeviceCodeTTL is how long a device login (RFC 8628) waits for the
	// person to allow it; DevicePollInterval is how often the device may
	// ask (whole seconds).
	DeviceCodeTTL      time.Duration // 10m
	DevicePollInterval time.Duration // 5s
	// SigningAlg signs access tokens: ES256 (default), RS256 or EdDSA.
	SigningAlg  string
	KeyRotation time.Duration // 30 days
	// SSHCARotation rotates the SSH user CA key.
	SSHCARotation time.Duration // 90 days
	// Audience of access tokens whose grant names none; the issuer by default.
	Audience []string
	// APIAudience: a token must carry one of these in aud to be used at
	// Stepup's own endpoints (/api, userinfo, /ssh). Default: the issuer.
	APIAudience []string
	// APIClients are the first-party clients whose people's tokens work
	// at /api and /ssh; a third-party relying party's never do.
	// Default: stepup-cli and console.
	APIClients []string
	// ManageClients may make management calls (organization security,
	// members, reminders, API tokens). Default: APIClients.
	ManageClients []string
	// ManageScope, when set, must also be granted for a management call.
	ManageScope string
	// Admins are the ids of the instance's administrators: they list
	// people and disable them.
	Admins []string
	// APITokenTTL is how long an API token works, and the most a person
	// may ask for at creation.
	APITokenTTL time.Duration // 90 days

	// Failed logins allowed per account from one client address, and per
	// client address for all accounts, within FailureWindow before further
	// attempts are refused. Past four times MaxFailuresPerAccount from all
	// addresses, an account's sign-ins are slowed to one at a time (up to a
	// minute apart) except from browsers that signed in to it before.
	MaxFailuresPerAccount int           // 5
	MaxFailuresPerAddress int           // 50
	FailureWindow         time.Duration // 15m
	// TOTPSkew is how many 30-second steps either side of now a code may
	// come from, for clocks that drift.
	TOTPSkew uint // 1

	Now    func() time.Time // time.Now
	Logger *slog.Logger     // slog.Default()
	// Metrics receives the server's Prometheus metrics; nil keeps them
	// unregistered.
	Metrics prometheus.Registerer
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.AccessTokenTTL, time.Hour)
	def(&c.IDTokenTTL, time.Hour)
	def(&c.RefreshTokenTTL, 30*24*time.Hour)
	def(&c.AuthCodeTTL, 10*time.Minute)
	def(&c.SessionTTL, 24*time.Hour)
	def(&c.DeviceCodeTTL, 10*time.Minute)
	def(&c.DevicePollInterval, 5*time.Second)
	// The interval goes out in whole seconds (RFC 8628 §3.2).
	c.DevicePollInterval = max(time.Second, c.DevicePollInterval.Truncate(time.Second))
	def(&c.KeyRotation, 30*24*time.Hour)
	def(&c.SSHCARotation, 90*24*time.Hour)
	def(&c.ReminderInterval, 24*time.Hour)
	if c.MaxLiveCertificates == 0 {
		c.MaxLiveCertificates = 500
	}
	def(&c.FailureWindow, 15*time.Minute)
	def(&c.APITokenTTL, 90*24*time.Hour)
	if c.SigningAlg == "" {
		c.SigningAlg = tokens.ES256
	}
	if len(c.Audience) == 0 {
		c.Audience = []string{c.Issuer}
	}
	if len(c.APIAudience) == 0 {
		c.APIAudience = []string{c.Issuer}
	}
	if len(c.APIClients) == 0 {
		c.APIClients = DefaultAPIClients
	}
	if len(c.ManageClients) == 0 {
		c.ManageClients = c.APIClients
	}
	if c.MaxFailuresPerAccount == 0 {
		c.MaxFailuresPerAccount = 5
	}
	if c.MaxFailuresPerAddress == 0 {
		c.MaxFailuresPerAddress = 50
	}
	if c.TOTPSkew == 0 {
		c.TOTPSkew = 1
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Mailer == nil {
		c.Mailer = mfa.LogMailer{Log: c.Logger}
	}
	if c.MailFrom == "" {
		if u, err := url.Parse(c.Issuer); err == nil {
			c.MailFrom = "Stepup <no-reply@" + u.Hostname() + ">"
		}
	}
}

func (c *Config) validate() error {
	var errs []error
	u, err := url.Parse(c.Issuer)
	if c.Issuer == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("issuer %q must be an absolute http(s) URL without query or fragment", c.Issuer))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("no store"))
	}
	users := map[string]bool{}
	for _, u := range c.Users {
		users[u.ID] = true
	}
	for _, cl := range c.Clients {
		// A client_credentials token's sub is the client id: were it also
		// a person's id, the client would act as that person.
		if users[cl.ID] {
			errs = append(errs, fmt.Errorf("client id %q is also a user id; give one of them another id", cl.ID))
		}
	}
	if len(c.Secret) < seal.MinSecretLen {
		errs = append(errs, fmt.Errorf("secret must be at least %d bytes", seal.MinSecretLen))
	}
	return errors.Join(errs...)
}

// DefaultAPIClients are the first-party clients when Config names none: the
// CLI and the console of the seeded configuration.
var DefaultAPIClients = []string{"stepup-cli", "console"}

// Server is the authorization server.
type Server struct {
	cfg      Config
	issuer   *url.URL
	oauth    fosite.OAuth2Provider
	store    storage.Store
	grants   *grantStore
	keys     *keyManager
	clients  *clientDirectory
	people   *people
	sessions *sessionStore
	// loginThrottle guards the password form.
	loginThrottle *loginThrottle
	mfa           *secondFactors
	ssh           *sshAuthority
	sso           *upstreams
	passkeys      *passkeys
	pages         *pages
	// csrfKey and the token HMAC key are derived from the secret, each for
	// one purpose.
	csrfKey []byte
	log     *slog.Logger
	metrics *metrics
	// outageLog keeps a store outage from flooding the log.
	outageLog everySecond
}

// New builds the server. It does not touch the store: keys are created on
// first use, so a replica can start while Redis is still coming up.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Store = cachedPerRequest(cfg.Store) // a login page reads and writes through its own cache (requestcache.go)
	box, err := seal.New(cfg.Secret)
	if err != nil {
		return nil, err
	}
	if err := validSeedUsers(cfg.Users); err != nil {
		return nil, err
	}
	dummy, err := HashPassword(randomString(16))
	if err != nil {
		return nil, err
	}
	issuer, _ := url.Parse(cfg.Issuer)
	s := &Server{
		cfg:     cfg,
		issuer:  issuer,
		store:   cfg.Store,
		clients: newClientDirectory(cfg.Clients),
		people: &people{Directory: directory.New(cfg.Store, cfg.Now), users: cfg.Users, orgs: cfg.Orgs,
			kv: cfg.Store, dummy: dummy},
		csrfKey: derive(cfg.Secret, "csrf"),
		log:     cfg.Logger,
		metrics: newMetrics(),
	}
	if cfg.Metrics != nil {
		if err := s.metrics.register(cfg.Metrics, newMFAAdoption(s)); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	algs := []string{cfg.SigningAlg}
	for _, alg := range []string{tokens.ES256, tokens.RS256} {
		if alg != cfg.SigningAlg {
			algs = append(algs, alg)
		}
	}
	retain := max(cfg.AccessTokenTTL, cfg.IDTokenTTL) + 5*time.Minute
	s.keys = newKeyManager(cfg.Store, box, algs, cfg.KeyRotation, retain, cfg.Now)
	s.grants = &grantStore{grants: cfg.Store, clients: s.clients, refreshTTL: cfg.RefreshTokenTTL, now: cfg.Now}
	s.sessions = &sessionStore{kv: cfg.Store, ttl: cfg.SessionTTL, now: cfg.Now, secure: issuer.Scheme == "https",
		name: cookieName(issuer, "stepup_session")}
	s.loginThrottle = &loginThrottle{kv: cfg.Store, window: cfg.FailureWindow, accountWindow: 24 * time.Hour,
		perPair: int64(cfg.MaxFailuresPerAccount), perAddress: int64(cfg.MaxFailuresPerAddress),
		backoffAfter: 4 * int64(cfg.MaxFailuresPerAccount), maxBackoff: time.Minute,
		deviceKey: derive(cfg.Secret, "device cookie"), secure: issuer.Scheme == "https", cookie: cookieName(issuer, deviceCookie)}
	// A rotated CA stays trusted a day: longer than any certificate (an
	// hour) plus any gateway's cache of the authority list.
	s.ssh = newSSHAuthority(cfg.Store, box, issuer.Hostname(), cfg.SSHCARotation, 24*time.Hour, cfg.Now)
	if s.passkeys, err = newPasskeys(cfg.Store, issuer, cfg.Now); err != nil {
		return nil, err
	}
	s.sso = &upstreams{byID: map[string]*SSOProvider{}, providers: map[string]*oidc.Provider{},
		callback: func(id string) string { return cfg.Issuer + "/sso/" + id + "/callback" }}
	for i := range cfg.SSOProviders {
		s.sso.byID[cfg.SSOProviders[i].ID] = &cfg.SSOProviders[i]
	}
	s.mfa = &secondFactors{
		kv: cfg.Store, box: box, recovery: mfa.NewRecoveryHasher(derive(cfg.Secret, "recovery codes")),
		throttle: mfa.Throttle{}, skew: cfg.TOTPSkew, issuer: issuer.Hostname(),
		maxPerAddress: cfg.MaxFailuresPerAddress, now: cfg.Now, failures: s.metrics.totpFailures,
	}
	s.sessions.prune = s.dropStaleFactors
	if s.pages, err = newPages(); err != nil {
		return nil, err
	}
	s.oauth = s.compose()
	return s, nil
}

func derive(secret, purpose string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("stepup " + purpose))
	return m.Sum(nil)
}

// compose builds fosite from the grants Stepup supports and nothing else.
func (s *Server) compose() fosite.OAuth2Provider {
	cfg := s.cfg
	fc := &fosite.Config{
		AccessTokenLifespan:            cfg.AccessTokenTTL,
		RefreshTokenLifespan:           cfg.RefreshTokenTTL,
		AuthorizeCodeLifespan:          cfg.AuthCodeTTL,
		IDTokenLifespan:                cfg.IDTokenTTL,
		IDTokenIssuer:                  cfg.Issuer,
		AccessTokenIssuer:              cfg.Issuer,
		TokenURL:                       cfg.Issuer + "/oauth2/token",
		ScopeStrategy:                  fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		ClientSecretsHasher:            secretHasher{},
		RefreshTokenScopes:             []string{"offline_access"},
		OmitRedirectScopeParam:         true,
		TokenEntropy:                   32,
	}
	tokenKey := derive(cfg.Secret, "token hmac")
	codes := &codeStrategy{opaqueTokens{prefix: "stpc_", kind: fosite.AuthorizeCode, key: tokenKey,
		lifespan: cfg.AuthCodeTTL, now: cfg.Now}}
	s.grants.codeSignature = codes.signature
	strategy := &compose.CommonStrategy{
		CoreStrategy: &coreStrategy{
			accessTokens: &accessTokens{issuer: cfg.Issuer, audience: cfg.Audience, alg: cfg.SigningAlg,
				lifespan: cfg.AccessTokenTTL, keys: s.keys, now: cfg.Now},
			codeStrategy: codes,
			refreshStrategy: &refreshStrategy{opaqueTokens{prefix: "stpr_", kind: fosite.RefreshToken, key: tokenKey,
				now: cfg.Now}},
		},
		OpenIDConnectTokenStrategy: &openid.DefaultStrategy{Signer: idTokenSigner{s.keys, s.clients}, Config: fc},
		Signer:                     idTokenSigner{s.keys, s.clients},
	}
	store := &oauthStore{clientDirectory: s.clients, grantStore: s.grants}
	defer func() {
		// After the refresh handler, which loads the grant's session.
		fc.TokenEndpointHandlers.Append(refreshCheck{sso: s.sso, mfa: s.mfa, srv: s, now: cfg.Now})
		fc.TokenEndpointHandlers.Append(&apiTokenGrant{srv: s, lifespan: cfg.AccessTokenTTL,
			HandleHelper: &oauth2.HandleHelper{AccessTokenStrategy: strategy.CoreStrategy, AccessTokenStorage: store, Config: fc}})
		for i, h := range fc.TokenEndpointHandlers {
			fc.TokenEndpointHandlers[i] = quietSkip{h}
		}
	}()
	return compose.Compose(fc, store, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2PKCEFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OpenIDConnectExplicitFactory,
		compose.OpenIDConnectRefreshFactory,
		s.deviceGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
	)
}

// quietSkip answers a token request that a handler does not serve with the
// bare ErrUnknownRequest. fosite asks every handler and its handlers wrap
// that answer in a stack trace, which cost 7% of a token request.
type quietSkip struct{ fosite.TokenEndpointHandler }

func (q quietSkip) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !q.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	return q.TokenEndpointHandler.HandleTokenEndpointRequest(ctx, r)
}

func (q quietSkip) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !q.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	return q.TokenEndpointHandler.PopulateTokenEndpointResponse(ctx, r, resp)
}

type coreStrategy struct {
	*accessTokens
	*codeStrategy
	*refreshStrategy
}

// oauthStore is what fosite sees: clients from the config, grants from the
// store.
type oauthStore struct {
	*clientDirectory
	*grantStore
}

var _ fosite.Storage = (*oauthStore)(nil)

// Router is the one method of chi.Router that Route needs.
type Router interface {
	Method(method, pattern string, h http.Handler)
}

// Route mounts every endpoint of the server on r.
func (s *Server) Route(r Router) {
	h := func(f http.HandlerFunc) http.Handler { return limitBody(s.withPeople(f)) }
	page := func(f http.HandlerFunc) http.Handler { return limitBody(securePage(s.withPeople(f))) }
	r.Method(http.MethodGet, "/.well-known/openid-configuration", h(s.discovery))
	r.Method(http.MethodGet, "/.well-known/jwks.json", h(s.jwks))
	r.Method(http.MethodGet, "/oauth2/authorize", page(s.authorize))
	r.Method(http.MethodPost, "/oauth2/authorize", page(s.authorize))
	r.Method(http.MethodPost, "/oauth2/token", h(s.token))
	r.Method(http.MethodPost, "/oauth2/revoke", h(s.revoke))
	r.Method(http.MethodPost, "/oauth2/introspect", h(s.introspect))
	r.Method(http.MethodGet, "/oauth2/userinfo", h(s.userinfo))
	r.Method(http.MethodPost, "/oauth2/userinfo", h(s.userinfo))
	r.Method(http.MethodGet, "/oauth2/logout", page(s.logout))
	r.Method(http.MethodPost, "/oauth2/logout", page(s.logout))
	r.Method(http.MethodGet, "/login", page(s.loginPage))
	r.Method(http.MethodPost, "/login", page(s.loginSubmit))
	r.Method(http.MethodGet, "/login/otp", page(s.otpForm))
	r.Method(http.MethodPost, "/login/otp", page(s.otpSubmit))
	r.Method(http.MethodGet, "/account/security", page(s.securityPage))
	for _, action := range []string{"setup", "verify", "recovery-codes", "disable"} {
		r.Method(http.MethodPost, "/account/security/"+action, page(s.securityPost(action)))
	}
	r.Method(http.MethodGet, "/sso/{provider}/start", page(s.ssoStart))
	r.Method(http.MethodGet, "/sso/{provider}/callback", page(s.ssoCallback))
	r.Method(http.MethodGet, "/orgs/{org}/settings/security", page(s.orgSettings))
	r.Method(http.MethodPost, "/orgs/{org}/settings/security", page(s.orgSettingsPost))
	r.Method(http.MethodPost, "/orgs/{org}/settings/remind", page(s.orgRemindPost))
	r.Method(http.MethodGet, "/account/password", page(s.passwordPageGet))
	r.Method(http.MethodPost, "/account/password", page(s.passwordPagePost))
	r.Method(http.MethodGet, "/account/email", page(s.emailPageGet))
	r.Method(http.MethodPost, "/account/email", page(s.emailPagePost))
	r.Method(http.MethodGet, "/email/verify/{token}", page(s.verifyEmailPage))
	r.Method(http.MethodPost, "/email/verify/{token}", page(s.verifyEmailPost))
	r.Method(http.MethodGet, "/password/forgot", page(s.forgotPage))
	r.Method(http.MethodPost, "/password/forgot", page(s.forgotPost))
	r.Method(http.MethodGet, "/password/reset/{token}", page(s.resetPage))
	r.Method(http.MethodPost, "/password/reset/{token}", page(s.resetPost))
	r.Method(http.MethodGet, "/invite/{token}", page(s.invitePage))
	r.Method(http.MethodPost, "/invite/{token}", page(s.acceptInvite))
	r.Method(http.MethodGet, "/invite/{token}/sign-in", page(s.inviteSignIn))
	r.Method(http.MethodGet, "/static/style.css", h(s.pages.style))
	r.Method(http.MethodGet, "/static/console.js", h(s.pages.script))
	r.Method(http.MethodPost, "/ssh", h(s.sshCertificate))
	r.Method(http.MethodGet, "/ssh/authority", h(s.sshAuthorities))
	r.Method(http.MethodGet, "/api/me", h(s.me))
	r.Method(http.MethodPost, "/api/me/api-tokens", h(s.createAPIToken))
	r.Method(http.MethodPost, "/api/me/password", h(s.apiChangePassword))
	r.Method(http.MethodPost, "/api/me/email", h(s.apiChangeEmail))
	r.Method(http.MethodGet, "/api/me/api-tokens", h(s.listAPITokens))
	r.Method(http.MethodDelete, "/api/me/api-tokens/{id}", h(s.deleteAPIToken))
	r.Method(http.MethodGet, "/api/orgs/{org}/access/{user_id}", h(s.access))
	r.Method(http.MethodGet, "/api/orgs/{org}", h(s.getOrg))
	r.Method(http.MethodPatch, "/api/orgs/{org}/security", h(s.patchOrgSecurity))
	r.Method(http.MethodPost, "/api/orgs", h(s.createOrg))
	r.Method(http.MethodGet, "/api/admin/users", h(s.adminUsers))
	r.Method(http.MethodPatch, "/api/admin/users/{user}", h(s.adminUpdateUser))
	r.Method(http.MethodGet, "/api/orgs/{org}/members", h(s.members))
	r.Method(http.MethodPatch, "/api/orgs/{org}/members/{user}", h(s.setMemberRole))
	r.Method(http.MethodPost, "/api/orgs/{org}/invitations", h(s.invite))
	r.Method(http.MethodGet, "/api/orgs/{org}/invitations", h(s.invitations))
	r.Method(http.MethodPost, "/api/orgs/{org}/invitations/{id}/resend", h(s.resendInvitation))
	r.Method(http.MethodDelete, "/api/orgs/{org}/invitations/{id}", h(s.revokeInvitation))
	r.Method(http.MethodDelete, "/api/orgs/{org}/members/{user}", h(s.removeMember))
	r.Method(http.MethodGet, "/api/orgs/{org}/audit", h(s.auditLog))
	r.Method(http.MethodPost, "/api/orgs/{org}/mfa-reminders", h(s.sendReminders))
	s.routeConsole(r, page)
	s.routeServices(r, h)
	s.routeDevice(r, page, h)
	s.routeRevocation(r, h)
	s.routePasskeys(r, page, h)
	// Probes do not wait for the directory: a replica is alive, and ready
	// once its store answers.
	r.Method(http.MethodGet, "/healthz", limitBody(http.HandlerFunc(healthz)))
	r.Method(http.MethodGet, "/readyz", limitBody(http.HandlerFunc(s.readyz)))
}

// Handler is the server on its own router-free mux, for tests and simple
// embedding.
func (s *Server) Handler() http.Handler {
	mux := &methodMux{ServeMux: http.NewServeMux()}
	s.Route(mux)
	return mux
}

type methodMux struct{ *http.ServeMux }

func (m *methodMux) Method(method, pattern string, h http.Handler) {
	m.Handle(method+" "+pattern, h)
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.unavailable(w, err)
		return
	}
	healthz(w, r)
}

// Keys exposes key rotation to the admin command.
func (s *Server) RotateKeys(ctx context.Context) error { return s.keys.Rotate(ctx) }

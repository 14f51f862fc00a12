// Package barefosite is bare fosite as an http.Handler: the yardstick that
// stepupd compare measures Stepup against. It is composed the way fosite's
// documentation composes a provider (compose.Compose with fosite's own
// memory store, ES256 JWT access tokens, OpenID Connect, PKCE,
// client_credentials, refresh and introspection), with nothing of Stepup's
// in it, so that the gap between the two is what Stepup adds.
//
// It serves POST /oauth2/token, POST /oauth2/introspect and GET /healthz.
// One confidential client is registered, with a SHA-256-hashed secret:
// fosite's default bcrypt would cost more than everything else in a
// request, and Stepup hashes its clients' secrets (random 256-bit values)
// with SHA-256 too.
package barefosite

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"runtime/debug"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/storage"
	"github.com/ory/fosite/token/jwt"
)

// Config configures New. ClientID and ClientSecret are required.
type Config struct {
	// Issuer is the iss of the tokens (default http://127.0.0.1).
	Issuer string
	// ClientID and ClientSecret are the confidential client's, allowed
	// client_credentials and refresh_token, authenticating with
	// client_secret_basic or client_secret_post.
	ClientID, ClientSecret string
	// Key signs the access and ID tokens (ES256); nil generates a P-256 key.
	Key *ecdsa.PrivateKey
}

// Server is bare fosite behind its three endpoints.
type Server struct {
	provider fosite.OAuth2Provider
	key      *ecdsa.PrivateKey
	mux      *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// New composes the provider.
func New(c Config) (*Server, error) {
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, errors.New("barefosite: ClientID and ClientSecret are required")
	}
	if c.Issuer == "" {
		c.Issuer = "http://127.0.0.1"
	}
	key := c.Key
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	if key.Curve != elliptic.P256() {
		return nil, errors.New("barefosite: Key must be a P-256 key, for ES256")
	}
	// The HMAC secret of refresh tokens and codes lives as long as the
	// process, like the memory store that holds what it signs.
	global := make([]byte, 32)
	if _, err := rand.Read(global); err != nil {
		return nil, err
	}
	cfg := &fosite.Config{
		GlobalSecret:                global,
		ClientSecretsHasher:         sha256Hasher{},
		AccessTokenIssuer:           c.Issuer,
		IDTokenIssuer:               c.Issuer,
		EnforcePKCEForPublicClients: true,
		ScopeStrategy:               fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:    fosite.DefaultAudienceMatchingStrategy,
	}
	secret, err := cfg.GetSecretsHasher(context.Background()).Hash(context.Background(), []byte(c.ClientSecret))
	if err != nil {
		return nil, err
	}
	store := storage.NewMemoryStore()
	store.Clients[c.ClientID] = &fosite.DefaultClient{ID: c.ClientID, Secret: secret,
		GrantTypes: []string{"client_credentials", "refresh_token"}, Scopes: []string{"access.read"}}

	getKey := func(context.Context) (any, error) { return key, nil }
	strategy := &compose.CommonStrategy{
		CoreStrategy:               compose.NewOAuth2JWTStrategy(getKey, compose.NewOAuth2HMACStrategy(cfg), cfg),
		OpenIDConnectTokenStrategy: compose.NewOpenIDConnectStrategy(getKey, cfg),
		Signer:                     &jwt.DefaultSigner{GetPrivateKey: getKey},
	}
	s := &Server{
		provider: compose.Compose(cfg, store, strategy,
			compose.OAuth2AuthorizeExplicitFactory,
			compose.OAuth2PKCEFactory,
			compose.OAuth2ClientCredentialsGrantFactory,
			compose.OAuth2RefreshTokenGrantFactory,
			compose.OpenIDConnectExplicitFactory,
			compose.OpenIDConnectRefreshFactory,
			compose.OAuth2TokenIntrospectionFactory,
		),
		key: key,
		mux: http.NewServeMux(),
	}
	s.mux.HandleFunc("POST /oauth2/token", s.token)
	s.mux.HandleFunc("POST /oauth2/introspect", s.introspect)
	s.mux.HandleFunc("GET /healthz", healthz)
	return s, nil
}

// PublicKey verifies the tokens the server signs.
func (s *Server) PublicKey() *ecdsa.PublicKey { return &s.key.PublicKey }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sess := newSession()
	ar, err := s.provider.NewAccessRequest(ctx, r, sess)
	if err != nil {
		s.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		// The client acts for itself (RFC 9068 §2.2).
		id := ar.GetClient().GetID()
		sess.SetSubject(id)
		sess.AccessClaims.Subject = id
	}
	// fosite has checked the scopes and audience against the client's.
	for _, sc := range ar.GetRequestedScopes() {
		ar.GrantScope(sc)
	}
	for _, a := range ar.GetRequestedAudience() {
		ar.GrantAudience(a)
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ir, err := s.provider.NewIntrospectionRequest(ctx, r, newSession())
	if err != nil {
		s.provider.WriteIntrospectionError(ctx, w, err)
		return
	}
	s.provider.WriteIntrospectionResponse(ctx, w, ir)
}

// healthz answers as Stepup's own /healthz does, so that the two probes
// cost the same and their latency is the floor of each server.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// session carries both what an ID token needs (openid.DefaultSession) and
// what the JWT access-token strategy needs. The expiry times live once, in
// the embedded DefaultSession, which both strategies read.
type session struct {
	*openid.DefaultSession
	AccessClaims *jwt.JWTClaims
	AccessHeader *jwt.Headers
}

var (
	_ oauth2.JWTSessionContainer = (*session)(nil)
	_ openid.Session             = (*session)(nil)
)

func newSession() *session {
	return &session{DefaultSession: openid.NewDefaultSession(), AccessClaims: &jwt.JWTClaims{}, AccessHeader: &jwt.Headers{}}
}

func (s *session) GetJWTClaims() jwt.JWTClaimsContainer { return s.AccessClaims }
func (s *session) GetJWTHeader() *jwt.Headers           { return s.AccessHeader }

func (s *session) Clone() fosite.Session {
	claims, header := *s.AccessClaims, *s.AccessHeader
	claims.Extra, header.Extra = maps.Clone(claims.Extra), maps.Clone(header.Extra)
	return &session{DefaultSession: s.DefaultSession.Clone().(*openid.DefaultSession), AccessClaims: &claims, AccessHeader: &header}
}

// sha256Hasher stores a client secret as the hex SHA-256 of it and
// compares in constant time. SHA-256 is enough for secrets that are
// random 256-bit values, and is what Stepup does; bcrypt is for passwords.
type sha256Hasher struct{}

var _ fosite.Hasher = sha256Hasher{}

func (sha256Hasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return []byte(hex.EncodeToString(sum[:])), nil
}

var errSecretMismatch = errors.New("barefosite: the client secret does not match")

func (h sha256Hasher) Compare(ctx context.Context, hash, data []byte) error {
	want, _ := h.Hash(ctx, data)
	if subtle.ConstantTimeCompare(hash, want) != 1 {
		return errSecretMismatch
	}
	return nil
}

// FositeVersion is the version of fosite built into this binary, such as
// "v0.49.0", or "" when the build carries no module information.
func FositeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/ory/fosite" {
			if d.Replace != nil {
				return fmt.Sprintf("%s => %s %s", d.Version, d.Replace.Path, d.Replace.Version)
			}
			return d.Version
		}
	}
	return ""
}

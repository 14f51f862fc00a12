package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"

	"github.com/ory/fosite"
)

// Client is an OAuth client from the config file.
type Client struct {
	ID string
	// Name is what pages call the client; the id when empty.
	Name string
	// SecretHash is the hex SHA-256 of a confidential client's secret. Client
	// secrets are random 256-bit values, so a fast hash is as safe as a slow
	// one and keeps the token endpoint from spending 200 ms per request on
	// bcrypt.
	SecretHash             string
	Public                 bool
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	GrantTypes             []string
	ResponseTypes          []string
	Scopes                 []string
	Audience               []string
	// TokenEndpointAuthMethod: none, client_secret_basic or client_secret_post.
	TokenEndpointAuthMethod string
	// IDTokenAlg signs this client's ID tokens; RS256 when empty.
	IDTokenAlg string
}

// HashClientSecret is how a client secret is kept.
func HashClientSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

type clientDirectory struct {
	clients map[string]*fosite.DefaultOpenIDConnectClient
	byID    map[string]Client
}

var _ fosite.ClientManager = (*clientDirectory)(nil)

func newClientDirectory(clients []Client) *clientDirectory {
	d := &clientDirectory{clients: map[string]*fosite.DefaultOpenIDConnectClient{}, byID: map[string]Client{}}
	for _, c := range clients {
		d.byID[c.ID] = c
		d.clients[c.ID] = &fosite.DefaultOpenIDConnectClient{
			DefaultClient: &fosite.DefaultClient{
				ID:            c.ID,
				Secret:        []byte(c.SecretHash),
				RedirectURIs:  c.RedirectURIs,
				GrantTypes:    c.GrantTypes,
				ResponseTypes: c.ResponseTypes,
				Scopes:        c.Scopes,
				Audience:      c.Audience,
				Public:        c.Public,
			},
			TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		}
	}
	return d
}

func (d *clientDirectory) GetClient(_ context.Context, id string) (fosite.Client, error) {
	c, ok := d.clients[id]
	if !ok {
		return nil, fosite.ErrNotFound.WithHintf("There is no client with id %q.", truncate(id, 64))
	}
	return c, nil
}

func (d *clientDirectory) config(id string) (Client, bool) {
	c, ok := d.byID[id]
	return c, ok
}

// We accept no JWT client assertions, so there are no assertion ids to track.
func (d *clientDirectory) ClientAssertionJWTValid(context.Context, string) error { return nil }
func (d *clientDirectory) SetClientAssertionJWT(context.Context, string, time.Time) error {
	return nil
}

// secretHasher compares a presented client secret with its SHA-256 in
// constant time.
type secretHasher struct{}

func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	return []byte(HashClientSecret(string(data))), nil
}

func (secretHasher) Compare(_ context.Context, hash, data []byte) error {
	if len(hash) == 0 || subtle.ConstantTimeCompare(hash, []byte(HashClientSecret(string(data)))) != 1 {
		return errors.New("client secret mismatch")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

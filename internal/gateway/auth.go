package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/tokens/sshca"
)

// The Permissions.Extensions keys under which authentication hands the
// certificate's identity to the connection. The Permissions are our own,
// not the certificate's, so these cannot be set by whoever signed it.
const (
	extUsername = "stepup-gateway-username"
	extUserID   = "stepup-gateway-user-id"
	extClaims   = "stepup-gateway-claims"
	extTokenID  = "stepup-gateway-token-id"
	extSerial   = "stepup-gateway-serial"
)

// identity is who a verified certificate says is connecting.
type identity struct {
	Username string // the certificate's first principal
	UserID   string // its KeyId
	Claims   sshca.Claims
	TokenID  string
	Serial   uint64
}

// attempt is id's attempt to use service.
func (id identity) attempt(service string) Attempt {
	return Attempt{Service: service, Username: id.Username, UserID: id.UserID, AMR: id.Claims.AMR, AuthTime: id.Claims.AuthTime,
		Serial: id.Serial, Certificate: true}
}

var errNotCertificate = errors.New("only Stepup SSH certificates are accepted, not plain keys")

// authenticate is the PublicKeyCallback. It only establishes who is
// connecting; whether they may use the service is decided when a session
// starts, where the person can be told why not.
func (s *Server) authenticate(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, errNotCertificate
	}
	if len(cert.ValidPrincipals) == 0 {
		return nil, errors.New("the certificate names no user")
	}
	username := cert.ValidPrincipals[0]
	// The login name is the service, not the person, so the checker is
	// shown the certificate's own username where it expects the login
	// name; everything else it checks as usual.
	if _, err := s.checker.Authenticate(loginAs{conn, username}, cert); err != nil {
		// The checker asks the revocation list (IsRevoked); a certificate
		// it refused for that is told why, in the banner that ssh shows.
		if d, done := decideRevocation(s.revoked, Attempt{
			Service: conn.User(), Username: username, UserID: cert.KeyId, Serial: cert.Serial, Certificate: true,
		}); done {
			return nil, &ssh.BannerError{Err: err, Message: d.SSHText()}
		}
		return nil, err
	}
	if cert.KeyId == "" {
		return nil, errors.New("the certificate has no key id (user id)")
	}
	claims, tokenID, err := sshca.ParseClaims(cert, s.cfg.Domain)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(claims)
	if err != nil {
		return nil, err
	}
	return &ssh.Permissions{
		// The server enforces source-address from here.
		CriticalOptions: maps.Clone(cert.CriticalOptions),
		Extensions: map[string]string{
			extUsername: username,
			extUserID:   cert.KeyId,
			extClaims:   string(raw),
			extTokenID:  tokenID,
			extSerial:   strconv.FormatUint(cert.Serial, 10),
		},
	}, nil
}

// loginAs presents a connection as if it had logged in as user.
type loginAs struct {
	ssh.ConnMetadata
	user string
}

func (l loginAs) User() string { return l.user }

func identityOf(p *ssh.Permissions) (identity, error) {
	if p == nil || p.Extensions[extUserID] == "" {
		return identity{}, errors.New("gateway: connection without a verified certificate")
	}
	id := identity{
		Username: p.Extensions[extUsername],
		UserID:   p.Extensions[extUserID],
		TokenID:  p.Extensions[extTokenID],
	}
	serial, err := strconv.ParseUint(p.Extensions[extSerial], 10, 64)
	if err != nil {
		return identity{}, fmt.Errorf("gateway: certificate serial: %w", err)
	}
	id.Serial = serial
	if err := json.Unmarshal([]byte(p.Extensions[extClaims]), &id.Claims); err != nil {
		return identity{}, fmt.Errorf("gateway: certificate claims: %w", err)
	}
	return id, nil
}

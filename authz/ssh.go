package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/internal/seal"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

// sshAuthority is the SSH user CA: its key set lives sealed in the store
// like the JWT keys, and an Authority is built once per key set.
type sshAuthority struct {
	sealedKeys[sshca.KeySet, *sshca.KeySet]
	cfg sshca.Config

	mu     sync.Mutex
	signed *sshca.KeySet
	ca     *sshca.Authority
}

func newSSHAuthority(kv storage.KV, box *seal.Box, domain string, rotateEvery, overlap time.Duration, now func() time.Time) *sshAuthority {
	return &sshAuthority{
		cfg: sshca.Config{Domain: domain, Now: now},
		sealedKeys: sealedKeys[sshca.KeySet, *sshca.KeySet]{
			kv: kv, box: box, name: "ssh-ca", now: now,
			create: func(now time.Time) (*sshca.KeySet, error) { return sshca.NewKeySet(now, rotateEvery) },
			rotate: func(ks *sshca.KeySet, now time.Time) error { return ks.Rotate(now, rotateEvery, overlap) },
			stale:  func(*sshca.KeySet) bool { return false },
		},
	}
}

func (a *sshAuthority) authority(ctx context.Context) (*sshca.Authority, error) {
	set, err := a.current(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.signed != set {
		signer, err := set.Signer()
		if err != nil {
			return nil, err
		}
		if a.ca, err = sshca.New(a.cfg, signer); err != nil {
			return nil, err
		}
		a.signed = set
	}
	return a.ca, nil
}

// sshAuthorities is GET /ssh/authority: the CA keys a server should trust,
// current first, then previous ones still within their overlap.
func (s *Server) sshAuthorities(w http.ResponseWriter, r *http.Request) {
	set, err := s.ssh.current(r.Context())
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSON(w, http.StatusOK, map[string]any{"authorities": set.Authorities(s.cfg.Now())})
}

// sshCertificate is POST /ssh: a short-lived OpenSSH user certificate for
// the bearer token's person, carrying the token's amr, auth_time, grant,
// scopes and jti, valid no longer than the token.
func (s *Server) sshCertificate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, ok := s.authenticate(w, r, usePerson)
	if !ok {
		return
	}
	u, claims := c.user, c.claims
	var body struct {
		Key string `json:"key"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Key == "" {
		status, msg := http.StatusBadRequest, `Send a JSON body {"key": "<OpenSSH public key>"}, for example the contents of ~/.ssh/id_ed25519.pub.`
		if tooLarge(err) {
			status, msg = http.StatusRequestEntityTooLarge, "The request body is too large: send one public key."
		}
		writeError(w, status, "invalid_request", msg)
		return
	}
	key, err := sshca.ParsePublicKey(body.Key)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	ca, err := s.ssh.authority(ctx)
	if err != nil {
		s.storeOrInternal(w, err)
		return
	}
	cert, err := ca.Sign(sshca.Request{
		PublicKey: key, UserID: u.ID, Username: u.Username, TokenID: claims.ID,
		TokenExpiry: time.Unix(claims.Expiry, 0),
		Claims:      sshca.Claims{AMR: claims.AMR, AuthTime: claims.AuthTime, Grant: claims.Grant, Scope: claims.Scope},
	})
	var ke *sshca.KeyError
	var re *sshca.RequestError
	switch {
	case errors.As(err, &ke):
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	case errors.As(err, &re):
		writeError(w, http.StatusBadRequest, "invalid_request", "No certificate can be issued for this token: "+err.Error())
		return
	case err != nil:
		s.internalError(w, err)
		return
	}
	// Entered before it is handed out, so that it can be revoked; refused
	// where a revocation took this token's grant or login meanwhile.
	var revoked *errCertificatesRevoked
	switch err := s.certLedgers().issued(ctx, u.ID, claims.ID, claims.AuthTime, claims.AMR, cert, ca.PublicKey()); {
	case errors.As(err, &revoked):
		writeError(w, http.StatusUnauthorized, "invalid_token", "No certificate for this token: "+revoked.Error()+". Log in again.")
		return
	case errors.Is(err, errTooManyCertificates):
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusTooManyRequests, "slow_down",
			fmt.Sprintf("You have %d SSH certificates that have not expired; reuse one rather than asking for more.", s.cfg.MaxLiveCertificates))
		return
	case err != nil:
		s.storeOrInternal(w, err)
		return
	}
	s.metrics.certificates.Inc()
	writeJSON(w, http.StatusOK, map[string]string{
		"certificate": strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))),
	})
}

func (s *Server) storeOrInternal(w http.ResponseWriter, err error) {
	if isUnavailable(err) {
		s.unavailable(w, err)
		return
	}
	s.internalError(w, err)
}

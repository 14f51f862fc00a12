package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/tokens"
	"github.com/stepup-dev/stepup/tokens/sshca"
)

const (
	keyFile  = "id_ed25519"
	certFile = "id_ed25519-cert.pub"
	// certMargin re-issues a certificate before it can expire in the
	// middle of an ssh handshake.
	certMargin = 2 * time.Minute
)

// ensureKey returns the public key line, generating the key pair when it
// is missing or fresh is set.
func (s *session) ensureKey(fresh bool) (string, error) {
	if err := s.mkdir(); err != nil {
		return "", err
	}
	if !fresh {
		if pub, err := os.ReadFile(s.path(keyFile + ".pub")); err == nil {
			if _, err := os.Stat(s.path(keyFile)); err == nil {
				return strings.TrimSpace(string(pub)), nil
			}
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "stepup")
	if err != nil {
		return "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " stepup"
	// A new key makes the old certificate useless.
	os.Remove(s.path(certFile))
	if err := writeFileAtomic(s.path(keyFile), pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(s.path(keyFile+".pub"), []byte(line+"\n"), 0o644); err != nil {
		return "", err
	}
	return line, nil
}

// loadCert returns nil without error when there is no certificate.
func (s *session) loadCert() (*ssh.Certificate, error) {
	b, err := os.ReadFile(s.path(certFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s is damaged: %w", s.path(certFile), err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s is not a certificate", s.path(certFile))
	}
	return cert, nil
}

// issueCertificate signs the session's key (a new one with fresh) for
// the token t.
func (a *App) issueCertificate(ctx context.Context, srv *server, t *storedTokens, fresh bool) (*ssh.Certificate, error) {
	s, err := a.session()
	if err != nil {
		return nil, err
	}
	line, err := s.ensureKey(fresh)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"key": line})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/ssh", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return nil, &unreachableError{url: srv.URL, err: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		Certificate string `json:"certificate"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	json.Unmarshal(raw, &out)
	if resp.StatusCode != http.StatusOK || out.Certificate == "" {
		if out.Error != "" {
			return nil, fmt.Errorf("the server refused the certificate: %s: %s", out.Error, out.Description)
		}
		return nil, fmt.Errorf("the server refused the certificate: %s", resp.Status)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.Certificate))
	if err != nil {
		return nil, fmt.Errorf("the server sent an unreadable certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("the server sent a key, not a certificate")
	}
	if err := writeFileAtomic(s.path(certFile), []byte(strings.TrimSpace(out.Certificate)+"\n"), 0o644); err != nil {
		return nil, err
	}
	return cert, nil
}

// certCurrent reports whether cert was issued for token jti and outlives
// certMargin.
func (a *App) certCurrent(cert *ssh.Certificate, srv *server, jti string) bool {
	if cert == nil || cert.ValidBefore == ssh.CertTimeInfinity {
		return false
	}
	if time.Unix(int64(cert.ValidBefore), 0).Sub(a.Now()) < certMargin {
		return false
	}
	_, id, err := sshca.ParseClaims(cert, srv.domain())
	return err == nil && id == jti
}

// ensureCert gives the person a certificate that matches their current
// token, logging in first when allowed and needed.
func (a *App) ensureCert(ctx context.Context, g *globals, srv *server, refreshOnly, fresh bool) (*ssh.Certificate, bool, error) {
	t, err := a.validTokens(ctx, srv)
	if errors.Is(err, errNotLoggedIn) && !refreshOnly && a.interactive(g) {
		if err := a.login(ctx, srv, loginOptions{noBrowser: g.noBrowser, device: g.device, report: a.Stderr}); err != nil {
			return nil, false, err
		}
		t, err = a.validTokens(ctx, srv)
	}
	if err != nil {
		return nil, false, err
	}
	c, err := t.claims()
	if err != nil {
		return nil, false, err
	}
	s, err := a.session()
	if err != nil {
		return nil, false, err
	}
	if !fresh {
		if cert, err := s.loadCert(); err == nil && a.certCurrent(cert, srv, c.ID) {
			return cert, false, nil
		}
	}
	cert, err := a.issueCertificate(ctx, srv, t, fresh)
	return cert, true, err
}

func (a *App) certLoadCmd(g *globals) *cobra.Command {
	var refreshOnly, fresh bool
	cmd := &cobra.Command{
		Use:   "ssh-cert:load",
		Short: "Make sure there is an SSH certificate for the current session",
		Example: `  stepup ssh-cert:load
  stepup ssh-cert:load --refresh-only   # in scripts: never open a browser
  stepup ssh-cert:load --new            # rotate the key pair too`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := a.discover(cmd.Context(), g)
			if err != nil {
				return err
			}
			cert, issued, err := a.ensureCert(cmd.Context(), g, srv, refreshOnly, fresh)
			if err != nil {
				return err
			}
			s, _ := a.session()
			verb := "is valid"
			if issued {
				verb = "was issued"
			}
			fmt.Fprintf(a.Stdout, "The SSH certificate %s until %s: %s\n", verb,
				time.Unix(int64(cert.ValidBefore), 0).Local().Format(time.DateTime), s.path(certFile))
			return nil
		},
	}
	cmd.Flags().BoolVar(&refreshOnly, "refresh-only", false, "only refresh; never open a browser")
	cmd.Flags().BoolVar(&fresh, "new", false, "generate a new key pair first")
	noBrowserFlag(cmd, g)
	deviceFlag(cmd, g)
	return cmd
}

func (a *App) certInfoCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ssh-cert:info",
		Short:   "Show the current SSH certificate",
		Example: `  stepup ssh-cert:info`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.session()
			if err != nil {
				return err
			}
			cert, err := s.loadCert()
			if err != nil {
				return err
			}
			if cert == nil {
				return errors.New("there is no SSH certificate; run: stepup ssh-cert:load")
			}
			// The domain comes from the stored session so that info works
			// offline.
			domain := ""
			if t, _ := s.load(); t != nil {
				domain = (&server{Issuer: t.Issuer}).domain()
			}
			a.printCert(cert, domain)
			return nil
		},
	}
}

func (a *App) printCert(cert *ssh.Certificate, domain string) {
	w := a.Stdout
	fmt.Fprintf(w, "Principal: %s\n", strings.Join(cert.ValidPrincipals, ", "))
	fmt.Fprintf(w, "Key ID: %s\n", cert.KeyId)
	from := time.Unix(int64(cert.ValidAfter), 0).Local().Format(time.DateTime)
	until := time.Unix(int64(cert.ValidBefore), 0).Local().Format(time.DateTime)
	state := "valid"
	if left := time.Unix(int64(cert.ValidBefore), 0).Sub(a.Now()); left <= 0 {
		state = "expired"
	} else {
		state = "valid, " + left.Round(time.Second).String() + " left"
	}
	fmt.Fprintf(w, "Valid: %s to %s (%s)\n", from, until, state)
	claims, _, err := sshca.ParseClaims(cert, domain)
	if err != nil {
		fmt.Fprintf(w, "Authentication: unknown (%v)\n", err)
		return
	}
	fmt.Fprintf(w, "Authentication methods: %s\n", strings.Join(claims.AMR, " "))
	if slices.Contains(claims.AMR, tokens.MethodMFA) {
		fmt.Fprintln(w, "Multi-factor authentication: verified")
	} else {
		fmt.Fprintln(w, "Multi-factor authentication: not verified")
	}
	var sso []string
	for _, m := range claims.AMR {
		if p, ok := strings.CutPrefix(m, tokens.SSOPrefix); ok {
			sso = append(sso, p)
		}
	}
	if len(sso) > 0 {
		fmt.Fprintf(w, "SSO providers: %s\n", strings.Join(sso, ", "))
	}
}

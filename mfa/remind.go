package mfa

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"os"
	"time"

	"github.com/stepup-dev/stepup/internal/email"
)

// Reminder is an email asking a member to turn on multi-factor
// authentication.
type Reminder struct {
	From     string // "Stepup <no-reply@example.com>"
	To       string // the member's address
	Username string
	OrgName  string
	Link     string // where to set it up: <issuer>/account/security
	Now      time.Time
}

// Message renders the reminder as an RFC 5322 message.
func (r Reminder) Message() ([]byte, error) {
	// Names come from configuration, but a header must never carry a
	// line break.
	org, user := email.OneLine(r.OrgName), email.OneLine(r.Username)
	body := fmt.Sprintf("Hello %s,\r\n\r\n", user) +
		fmt.Sprintf("%s asks its members to protect their accounts with multi-factor authentication (MFA): after your password, a code from an authenticator app on your phone.\r\n\r\n", org) +
		fmt.Sprintf("It takes a minute. Turn it on here:\r\n\r\n  %s\r\n\r\n", r.Link) +
		fmt.Sprintf("Until you do, %s may refuse access to its services.\r\n", org)
	return email.Compose(r.From, r.To, "Turn on multi-factor authentication for "+org, body, r.Now)
}

// Mailer sends a message.
type Mailer interface {
	Send(ctx context.Context, from string, to []string, msg []byte) error
}

// SMTP sends through an SMTP relay with net/smtp. A relay that offers
// STARTTLS gets its certificate checked for the host in Addr before any
// mail or password goes to it, so that whoever sits between us and the
// relay cannot read either; a relay that fails the check gets nothing. A
// relay that offers no STARTTLS is written to in plaintext, but PLAIN
// authentication (when Username is set) is then refused by net/smtp unless
// the relay is on localhost.
type SMTP struct {
	Addr               string // host:port; the host is the name the certificate must carry
	Username, Password string
	// RootCAs are the authorities a relay's certificate may chain to; nil
	// means the system's. A relay with a certificate from a private CA
	// needs that CA's bundle: see LoadCABundle.
	RootCAs *x509.CertPool
	Timeout time.Duration // per message; default 15s
}

func (s SMTP) Send(ctx context.Context, from string, to []string, msg []byte) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return err
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	host, _, _ := net.SplitHostPort(s.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		// StartTLS uses the config as given and fills in nothing, not even
		// the name to verify, which must be the one we dialled.
		err := c.StartTLS(&tls.Config{ServerName: host, RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12})
		if err != nil {
			return fmt.Errorf("smtp %s: STARTTLS: %w", s.Addr, err)
		}
	}
	if s.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, host)); err != nil {
			return fmt.Errorf("smtp %s: AUTH: %w", s.Addr, err)
		}
	}
	sender, err := mail.ParseAddress(from)
	if err != nil {
		return err
	}
	if err := c.Mail(sender.Address); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// LoadCABundle reads a PEM file of CA certificates (an smtp.ca_file) into
// a pool for SMTP.RootCAs. The pool holds the file's certificates only, not
// the system's: an operator who names a private CA for the relay means that
// CA, and a public one should not be able to vouch for the relay instead.
// Blocks other than CERTIFICATE are skipped, as other tools skip them; a
// CERTIFICATE that does not parse, or a file with none, is an error naming
// the file, so that a wrong path fails at start rather than at the first
// reminder.
func LoadCABundle(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// os errors already name the file.
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle %s: certificate %d: %w", path, n, err)
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, fmt.Errorf("CA bundle %s: no PEM CERTIFICATE block in it", path)
	}
	return pool, nil
}

// LogMailer writes messages to the log instead of sending them, so that a
// server without a mail server (stepupd --dev) still shows what it sent.
type LogMailer struct{ Log *slog.Logger }

// Send logs the subject and the text as a person would read it (the
// quoted-printable decoded, so that links are whole and can be copied).
func (l LogMailer) Send(_ context.Context, from string, to []string, msg []byte) error {
	subject, text := "", string(msg)
	if m, err := mail.ReadMessage(bytes.NewReader(msg)); err == nil {
		subject, _ = new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if body, err := io.ReadAll(quotedprintable.NewReader(m.Body)); err == nil {
			text = string(body)
		}
	}
	l.Log.Info("email (no smtp configured, not sent)", "from", from, "to", to, "subject", subject, "text", text)
	return nil
}

// Package email composes the plain-text messages Stepup sends (reminders,
// invitations) as RFC 5322 messages ready for SMTP.
package email

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// Compose renders a plain-text message from one sender to one recipient.
// The subject is Q-encoded and the body quoted-printable, so any text is
// safe; neither can add a header.
func Compose(from, to, subject, body string, now time.Time) ([]byte, error) {
	sender, err := mail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("sender %q: %w", from, err)
	}
	recipient, err := mail.ParseAddress(to)
	if err != nil {
		return nil, fmt.Errorf("recipient %q: %w", to, err)
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	domain := sender.Address[strings.LastIndexByte(sender.Address, '@')+1:]

	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", sender.String())
	header("To", recipient.String())
	header("Subject", mime.QEncoding.Encode("utf-8", OneLine(subject)))
	header("Date", now.UTC().Format(time.RFC1123Z))
	header("Message-ID", "<"+hex.EncodeToString(id)+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(body)); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// OneLine joins the lines of s with spaces: names from configuration or
// from people go into subjects and greetings, never as line breaks.
func OneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' }), " ")
}

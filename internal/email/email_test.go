package email

import (
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"
)

func TestCompose(t *testing.T) {
	msg, err := Compose("Stepup <no-reply@example.com>", "bob@example.com", "Join ACME\r\nBcc: evil@example.com", "Héllo\r\n  https://x.example/invite/abc\r\n", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(msg)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Bcc") != "" {
		t.Fatalf("a line break in the subject made a header: %q", msg)
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if subject != "Join ACME Bcc: evil@example.com" || m.Header.Get("To") != "<bob@example.com>" || m.Header.Get("Message-Id") == "" {
		t.Errorf("headers %v (subject %q)", m.Header, subject)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(m.Body))
	if string(body) != "Héllo\r\n  https://x.example/invite/abc\r\n" {
		t.Errorf("body %q", body)
	}
	if _, err := Compose("not an address", "bob@example.com", "s", "b", time.Now()); err == nil {
		t.Error("a bad sender was accepted")
	}
}

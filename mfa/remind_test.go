package mfa

import (
	"mime"
	"net/mail"
	"strings"
	"testing"
	"time"
)

func TestReminderMessage(t *testing.T) {
	msg, err := Reminder{From: "Stepup <no-reply@example.com>", To: "dave@example.com", Username: "dave",
		OrgName: "Team\r\nBcc: evil@example.com", Link: "https://id.example.com/account/security", Now: time.Unix(1_800_000_000, 0)}.Message()
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(msg)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Bcc") != "" {
		t.Fatal("a line break in the organization name injected a header")
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if subject != "Turn on multi-factor authentication for Team Bcc: evil@example.com" || m.Header.Get("To") != "<dave@example.com>" {
		t.Fatalf("headers: subject %q to %q", subject, m.Header.Get("To"))
	}
	if _, err := (Reminder{From: "not an address", To: "x@example.com"}).Message(); err == nil {
		t.Fatal("a bad sender was accepted")
	}
}

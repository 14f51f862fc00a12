package mfa_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/testenv"
	"github.com/stepup-dev/stepup/mfa"
)

func reminder(t *testing.T) (mfa.Reminder, []byte) {
	t.Helper()
	r := mfa.Reminder{From: "Stepup <no-reply@example.com>", To: "dave@example.com", Username: "dave",
		OrgName: "Team", Link: "https://id.example.com/account/security", Now: time.Unix(1_800_000_000, 0)}
	msg, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	return r, msg
}

// TestSMTPReminderThroughSTARTTLS sends a reminder the way the server
// does, to a relay that offers STARTTLS, as production relays do.
func TestSMTPReminderThroughSTARTTLS(t *testing.T) {
	sink := testenv.StartSMTP(t)
	r, msg := reminder(t)
	m := mfa.SMTP{Addr: sink.Addr, RootCAs: sink.RootCAs()}
	if err := m.Send(t.Context(), r.From, []string{r.To}, msg); err != nil {
		t.Fatalf("Send through STARTTLS: %v", err)
	}
	// The sink stores a message before it accepts it, so it is there once
	// Send has returned.
	got := sink.Messages()
	if len(got) != 1 {
		t.Fatalf("%d messages arrived, want 1", len(got))
	}
	mail := got[0]
	if !mail.TLS {
		t.Error("the reminder was sent in plaintext to a relay that offers STARTTLS")
	}
	if mail.From != "no-reply@example.com" || !slices.Equal(mail.To, []string{"dave@example.com"}) {
		t.Errorf("envelope: from %q to %q", mail.From, mail.To)
	}
	if !bytes.Equal(mail.Data, msg) {
		t.Errorf("message arrived as\n%q\nwant\n%q", mail.Data, msg)
	}
	for h, want := range map[string]string{
		"From":    `"Stepup" <no-reply@example.com>`,
		"To":      "<dave@example.com>",
		"Subject": "Turn on multi-factor authentication for Team",
	} {
		if v := mail.Header(h); v != want {
			t.Errorf("%s: %q, want %q", h, v, want)
		}
	}
	body := mail.Body()
	for _, want := range []string{"Hello dave,\r\n", "\r\n  https://id.example.com/account/security\r\n", "Until you do, Team may refuse access"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
}

// TestSMTPRefusesUntrustedCertificate: a relay whose certificate does not
// chain to the configured roots gets no mail, and the error says why.
func TestSMTPRefusesUntrustedCertificate(t *testing.T) {
	sink := testenv.StartSMTP(t)
	r, msg := reminder(t)
	for name, roots := range map[string]*x509.CertPool{
		"system roots":       nil,
		"another relay's CA": testenv.StartSMTP(t).RootCAs(),
	} {
		t.Run(name, func(t *testing.T) {
			err := mfa.SMTP{Addr: sink.Addr, RootCAs: roots}.Send(t.Context(), r.From, []string{r.To}, msg)
			var unknown x509.UnknownAuthorityError
			if !errors.As(err, &unknown) {
				t.Fatalf("Send = %v, want an unknown-authority error", err)
			}
			if !strings.Contains(err.Error(), "STARTTLS") || !strings.Contains(err.Error(), sink.Addr) {
				t.Errorf("error %q does not say it was the relay's STARTTLS", err)
			}
		})
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d messages delivered to a relay with an untrusted certificate", n)
	}
}

// TestSMTPAuthAfterSTARTTLS: the password goes to the relay only inside
// TLS (the sink refuses AUTH before it), and is refused in plaintext to a
// relay that is not on localhost.
func TestSMTPAuthAfterSTARTTLS(t *testing.T) {
	r, msg := reminder(t)
	sink := testenv.StartSMTP(t, testenv.SMTPAuth("mailer", "s3cret"))
	m := mfa.SMTP{Addr: sink.Addr, Username: "mailer", Password: "s3cret", RootCAs: sink.RootCAs()}
	if err := m.Send(t.Context(), r.From, []string{r.To}, msg); err != nil {
		t.Fatalf("Send with a password: %v", err)
	}
	if got := sink.Messages(); len(got) != 1 || !got[0].TLS || got[0].User != "mailer" {
		t.Fatalf("want one message inside TLS from mailer, got %d: %v", len(got), got)
	}

	m.Password = "wrong"
	if err := m.Send(t.Context(), r.From, []string{r.To}, msg); err == nil || !strings.Contains(err.Error(), "535") {
		t.Errorf("Send with a wrong password = %v, want the relay's 535", err)
	}

	// An IPv4-mapped address is loopback to the dialer but not the
	// localhost net/smtp makes its exception for, so this is what a relay
	// elsewhere without STARTTLS gets.
	plain := testenv.StartSMTP(t, testenv.SMTPPlaintext(), testenv.SMTPAuth("mailer", "s3cret"))
	_, port, _ := net.SplitHostPort(plain.Addr)
	m = mfa.SMTP{Addr: net.JoinHostPort("::ffff:127.0.0.1", port), Username: "mailer", Password: "s3cret"}
	if err := m.Send(t.Context(), r.From, []string{r.To}, msg); err == nil || !strings.Contains(err.Error(), "unencrypted") {
		t.Errorf("Send with a password to a relay without STARTTLS = %v, want a refusal", err)
	}
	if n := len(plain.Messages()) + len(sink.Messages()); n != 1 {
		t.Errorf("%d messages delivered, want only the first", n)
	}
}

func TestLoadCABundle(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data ...[]byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, bytes.Join(data, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	r, msg := reminder(t)

	t.Run("good", func(t *testing.T) {
		// A bundle of two CAs, with the text and other blocks bundles carry.
		a, b := testenv.StartSMTP(t), testenv.StartSMTP(t)
		path := write("bundle.pem",
			[]byte("# private relays\n"), a.CAPEM(),
			pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1, 2, 3}}), b.CAPEM())
		pool, err := mfa.LoadCABundle(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, sink := range []*testenv.SMTPSink{a, b} {
			if err := (mfa.SMTP{Addr: sink.Addr, RootCAs: pool}).Send(t.Context(), r.From, []string{r.To}, msg); err != nil {
				t.Errorf("Send trusting the bundle: %v", err)
			}
			if n := len(sink.Messages()); n != 1 {
				t.Errorf("%d messages arrived, want 1", n)
			}
		}
		// The bundle's CAs and nothing else: not the system's roots.
		want := x509.NewCertPool()
		want.AppendCertsFromPEM(a.CAPEM())
		want.AppendCertsFromPEM(b.CAPEM())
		if !pool.Equal(want) {
			t.Error("the pool holds more or less than the bundle's two CAs")
		}
	})

	for _, tc := range []struct {
		name, path string
		want       []string
		is         error
	}{
		{name: "missing", path: filepath.Join(dir, "nope.pem"), want: []string{"nope.pem"}, is: fs.ErrNotExist},
		{name: "directory", path: dir, want: []string{dir}},
		{name: "empty", path: write("empty.pem"), want: []string{"empty.pem", "no PEM CERTIFICATE"}},
		{name: "key only", path: write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})),
			want: []string{"key.pem", "no PEM CERTIFICATE"}},
		{name: "DER, not PEM", path: write("ca.der", testCADER(t)), want: []string{"ca.der", "no PEM CERTIFICATE"}},
		{name: "broken certificate", path: write("broken.pem", testenv.StartSMTP(t).CAPEM(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})),
			want: []string{"broken.pem", "certificate 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := mfa.LoadCABundle(tc.path)
			if err == nil || pool != nil {
				t.Fatalf("LoadCABundle = %v, %v; want an error", pool, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
}

func testCADER(t *testing.T) []byte {
	block, _ := pem.Decode(testenv.StartSMTP(t).CAPEM())
	return block.Bytes
}

// TestLogMailerShowsWholeLinks: without SMTP, the log shows the mail as a
// person reads it, so that a long link can be copied from it whole.
func TestLogMailerShowsWholeLinks(t *testing.T) {
	var buf bytes.Buffer
	link := "http://127.0.0.1:8080/invite/stpi_" + strings.Repeat("A", 43)
	r := mfa.Reminder{From: "Stepup <no-reply@example.com>", To: "bob@example.com", Username: "bob", OrgName: "ACME", Link: link, Now: time.Now()}
	msg, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	if err := (mfa.LogMailer{Log: slog.New(slog.NewTextHandler(&buf, nil))}).Send(t.Context(), r.From, []string{r.To}, msg); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, link) || !strings.Contains(out, "Turn on multi-factor authentication for ACME") {
		t.Fatalf("the log does not show the whole link and the subject: %s", out)
	}
}

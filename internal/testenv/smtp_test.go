package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const smtpWait = 5 * time.Second

// sendMail is smtp.SendMail with the sink's CA trusted: SendMail verifies
// STARTTLS against the system's roots only, which do not know the sink.
func sendMail(s *SMTPSink, from string, to []string, msg []byte) error {
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: s.RootCAs()}); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
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

// showMails formats messages for a failure, with Data readable.
func showMails(ms []Mail) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "{From:%q To:%q TLS:%v User:%q Data:%q}", m.From, m.To, m.TLS, m.User, m.Data)
	}
	return "[" + b.String() + "]"
}

func TestSMTPSinkSendMail(t *testing.T) {
	s := StartSMTP(t)
	msg := "From: App <app@example.org>\r\n" +
		"To: a@example.org, b@example.org\r\n" +
		"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n" +
		"X-Seq: first\r\n" +
		"X-Seq: second\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=UTF-8\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n" +
		"\r\n" +
		"Hallo J=C3=BCrgen,\r\n" +
		// net/smtp stuffs this into "..hello" on the wire; the sink must undo it.
		".hello\r\n" +
		"a soft=\r\n" +
		" break\r\n"
	if err := sendMail(s, "app@example.org", []string{"a@example.org", "b@example.org"}, []byte(msg)); err != nil {
		t.Fatalf("sendMail: %v", err)
	}
	got := s.Wait(1, smtpWait)
	if len(got) != 1 {
		t.Fatalf("Wait(1) = %d messages, want 1", len(got))
	}
	m := got[0]
	if m.From != "app@example.org" {
		t.Errorf("From = %q", m.From)
	}
	if want := []string{"a@example.org", "b@example.org"}; !slices.Equal(m.To, want) {
		t.Errorf("To = %q, want %q", m.To, want)
	}
	if string(m.Data) != msg {
		t.Errorf("Data = %q, want %q", m.Data, msg)
	}
	if !m.TLS || m.User != "" {
		t.Errorf("TLS = %v, User = %q; want a message inside STARTTLS from no one in particular", m.TLS, m.User)
	}
	if h := m.Header("Subject"); h != "Grüße" {
		t.Errorf(`Header("Subject") = %q, want "Grüße"`, h)
	}
	if h := m.Header("x-seq"); h != "first" {
		t.Errorf(`Header("x-seq") = %q, want the first occurrence`, h)
	}
	if h := m.Header("Cc"); h != "" {
		t.Errorf(`Header("Cc") = %q, want ""`, h)
	}
	if b, want := m.Body(), "Hallo Jürgen,\r\n.hello\r\na soft break\r\n"; b != want {
		t.Errorf("Body() = %q, want %q", b, want)
	}
}

func TestSMTPSinkBodyEncodings(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"plain", "Subject: x\r\n\r\nline =41\r\n", "line =41\r\n"},
		{"base64", "Content-Transfer-Encoding: Base64\r\n\r\naMOk\r\nbGxv\r\n", "hällo"},
		{"broken-qp-kept-raw", "Content-Transfer-Encoding: quoted-printable\r\n\r\nbad =ZZ\r\n", "bad =ZZ\r\n"},
		{"no-header-end", "garbage", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (Mail{Data: []byte(tc.data)}).Body(); got != tc.want {
				t.Errorf("Body() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSMTPSinkFail(t *testing.T) {
	s := StartSMTP(t)
	send := func() error {
		return sendMail(s, "app@example.org", []string{"a@example.org"}, []byte("Subject: x\r\n\r\nbody\r\n"))
	}
	s.Fail(true)
	err := send()
	var perr *textproto.Error
	if !errors.As(err, &perr) || perr.Code != 451 {
		t.Fatalf("SendMail while failing = %v, want a 451 reply", err)
	}
	s.Fail(false)
	if err := send(); err != nil {
		t.Fatalf("SendMail after Fail(false): %v", err)
	}
	if got := s.Wait(1, smtpWait); len(got) != 1 {
		t.Fatalf("got %d messages, want only the one sent after Fail(false)", len(got))
	}
}

func TestSMTPSinkConcurrent(t *testing.T) {
	s := StartSMTP(t)
	const senders, perConn = 4, 3
	// Every sender holds its connection open before any sends, so the
	// sessions really overlap rather than run one after another.
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(senders)
	errs := make(chan error, senders)
	for i := range senders {
		wg.Go(func() {
			c, err := smtp.Dial(s.Addr)
			if err == nil {
				err = c.Hello("localhost")
			}
			ready.Done()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			<-start
			for j := range perConn {
				if err := sendOn(c, i, j); err != nil {
					errs <- fmt.Errorf("sender %d message %d: %w", i, j, err)
					return
				}
			}
			errs <- c.Quit()
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	got := s.Wait(senders*perConn, smtpWait)
	if len(got) != senders*perConn {
		t.Fatalf("got %d messages, want %d", len(got), senders*perConn)
	}
	seen := map[string]bool{}
	for _, m := range got {
		seen[m.Header("Subject")] = true
		if len(m.To) != 1 || m.To[0] != m.Header("Subject")+"@example.org" {
			t.Errorf("message %q went to %q", m.Header("Subject"), m.To)
		}
	}
	for i := range senders {
		for j := range perConn {
			if subj := fmt.Sprintf("m%d-%d", i, j); !seen[subj] {
				t.Errorf("message %s missing", subj)
			}
		}
	}
}

func sendOn(c *smtp.Client, i, j int) error {
	subj := fmt.Sprintf("m%d-%d", i, j)
	if err := c.Mail("app@example.org"); err != nil {
		return err
	}
	if err := c.Rcpt(subj + "@example.org"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "Subject: %s\r\n\r\nbody\r\n", subj); err != nil {
		return err
	}
	return w.Close()
}

// TestSMTPSinkProtocol speaks raw SMTP to check what net/smtp never sends:
// commands out of order, unknown commands, oversized lines and messages.
func TestSMTPSinkProtocol(t *testing.T) {
	s := StartSMTP(t)
	c, err := textproto.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect := func(want int, cmd string) string {
		t.Helper()
		if cmd != "" {
			if err := c.PrintfLine("%s", cmd); err != nil {
				t.Fatalf("sending %.40q: %v", cmd, err)
			}
		}
		code, text, err := c.ReadResponse(0)
		if err != nil || code != want {
			t.Fatalf("%.40q: got %d %q (%v), want %d", cmd, code, text, err, want)
		}
		return text
	}

	if greet := expect(220, ""); !strings.Contains(greet, "ESMTP") {
		t.Errorf("greeting %q does not say ESMTP", greet)
	}
	expect(503, "MAIL FROM:<a@example.org>")
	expect(250, "NOOP")
	expect(500, "FROB")
	expect(500, strings.Repeat("x", smtpMaxLine+10))
	expect(501, "EHLO")
	ext := strings.Split(expect(250, "EHLO client.example.org"), "\n")
	if !slices.Contains(ext, "8BITMIME") || ext[len(ext)-1] != "SMTPUTF8" {
		t.Errorf("EHLO extensions %q: want 8BITMIME and SMTPUTF8 last", ext)
	}
	if !slices.Contains(ext, "STARTTLS") {
		t.Errorf("EHLO extensions %q: want STARTTLS", ext)
	}
	for _, e := range ext {
		if strings.HasPrefix(e, "AUTH") {
			t.Errorf("EHLO advertises %q without credentials set", e)
		}
	}
	expect(503, "RCPT TO:<b@example.org>")
	expect(503, "DATA")
	expect(501, "MAIL FROM:a@example.org")
	expect(250, "mail from: <a@example.org> BODY=8BITMIME")
	expect(503, "MAIL FROM:<a@example.org>")
	expect(503, "DATA")
	expect(501, "RCPT TO:<>")
	expect(250, "RCPT TO:<b@example.org>")
	expect(250, "RSET")
	expect(503, "DATA")

	expect(250, "HELO client.example.org")
	expect(250, "MAIL FROM:<>")
	expect(250, "RCPT TO:<b@example.org>")
	expect(354, "DATA")
	expect(250, "Subject: dots\r\n\r\n..hello\r\n...\r\n.x.\r\n.")
	if got := s.Wait(1, smtpWait); len(got) != 1 || got[0].From != "" || string(got[0].Data) != "Subject: dots\r\n\r\n.hello\r\n..\r\nx.\r\n" {
		t.Fatalf("after dot-stuffed DATA: %s", showMails(got))
	}

	expect(250, "MAIL FROM:<a@example.org>")
	expect(250, "RCPT TO:<b@example.org>")
	expect(354, "DATA")
	line := strings.Repeat("y", 998)
	big := strings.Repeat(line+"\r\n", smtpMaxMessage/1000+10)
	expect(552, big+".")

	expect(250, "MAIL FROM:<a@example.org>")
	expect(250, "RCPT TO:<b@example.org>")
	expect(354, "DATA")
	expect(500, "Subject: long\r\n\r\n"+strings.Repeat("z", smtpMaxLine+1)+"\r\nafter\r\n.")

	// A rejected message ends its transaction, and nothing of it is kept.
	expect(503, "DATA")
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages stored, want only the first", n)
	}

	expect(221, "QUIT")
	if _, err := c.ReadLine(); err == nil {
		t.Error("connection still open after QUIT")
	}
}

func TestSMTPSinkIdleTimeout(t *testing.T) {
	s := StartSMTP(t)
	s.idle.Store(int64(100 * time.Millisecond))
	c, err := textproto.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	// Say nothing: the sink must give up on its own.
	if code, _, err := c.ReadResponse(0); code != 421 {
		t.Fatalf("silent client got %d (%v), want 421", code, err)
	}
	if _, err := c.ReadLine(); err == nil {
		t.Error("connection still open after 421")
	}
}

func TestSMTPSinkWaitAndMessages(t *testing.T) {
	s := StartSMTP(t)
	start := time.Now()
	if got := s.Wait(1, 50*time.Millisecond); len(got) != 0 {
		t.Fatalf("Wait on an empty sink = %s", showMails(got))
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > smtpWait {
		t.Errorf("Wait returned after %v, want about 50ms", d)
	}

	// Wait must wake for a message that arrives while it waits.
	go func() {
		time.Sleep(50 * time.Millisecond)
		sendMail(s, "a@example.org", []string{"b@example.org"}, []byte("Subject: late\r\n\r\nx\r\n"))
	}()
	got := s.Wait(1, smtpWait)
	if len(got) != 1 || got[0].Header("Subject") != "late" {
		t.Fatalf("Wait(1) = %s", showMails(got))
	}

	got[0].To[0] = "changed"
	got[0].Data[0] = 'X'
	if m := s.Messages()[0]; m.To[0] != "b@example.org" || m.Data[0] != 'S' {
		t.Errorf("changing a returned message changed the sink's copy: %+v", m)
	}
}

func TestSMTPSinkCleanup(t *testing.T) {
	var addr string
	var idle net.Conn
	defer func() {
		if idle != nil {
			idle.Close()
		}
	}()
	start := time.Now()
	t.Run("inner", func(t *testing.T) {
		s := StartSMTP(t)
		addr = s.Addr
		// A client that connects and never speaks must not stall cleanup,
		// so it stays open until after the sink is gone.
		var err error
		if idle, err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		// Reading the greeting makes sure a session is being served.
		if _, _, err := textproto.NewConn(idle).ReadResponse(220); err != nil {
			t.Fatal(err)
		}
	})
	if d := time.Since(start); d > smtpIdleTimeout/2 {
		t.Errorf("cleanup took %v with an idle client connected", d)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("sink at %s still accepts after cleanup", addr)
	}
}

// smtpConn is a raw client session for the protocol tests, able to switch
// to TLS midway.
type smtpConn struct {
	t    *testing.T
	raw  net.Conn
	c    *textproto.Conn
	addr string
}

func dialSMTP(t *testing.T, s *SMTPSink) *smtpConn {
	t.Helper()
	raw, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	sc := &smtpConn{t: t, raw: raw, c: textproto.NewConn(raw), addr: s.Addr}
	sc.expect(220, "")
	return sc
}

func (sc *smtpConn) expect(want int, cmd string) string {
	sc.t.Helper()
	if cmd != "" {
		if err := sc.c.PrintfLine("%s", cmd); err != nil {
			sc.t.Fatalf("sending %.40q: %v", cmd, err)
		}
	}
	code, text, err := sc.c.ReadResponse(0)
	if code != want {
		sc.t.Fatalf("%.40q: got %d %q (%v), want %d", cmd, code, text, err, want)
	}
	return text
}

// startTLS sends STARTTLS and shakes hands with cfg, returning the
// handshake's error rather than failing, so a test can expect one.
func (sc *smtpConn) startTLS(cfg *tls.Config) (tls.ConnectionState, error) {
	sc.t.Helper()
	sc.expect(220, "STARTTLS")
	tc := tls.Client(sc.raw, cfg)
	if err := tc.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	sc.c = textproto.NewConn(tc)
	return tc.ConnectionState(), nil
}

func TestSMTPSinkSTARTTLS(t *testing.T) {
	s := StartSMTP(t)
	sc := dialSMTP(t, s)
	sc.expect(503, "STARTTLS")
	ext := strings.Split(sc.expect(250, "EHLO client.example.org"), "\n")
	if !slices.Contains(ext, "STARTTLS") {
		t.Fatalf("EHLO extensions %q: want STARTTLS", ext)
	}
	sc.expect(501, "STARTTLS now")
	st, err := sc.startTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: s.RootCAs()})
	if err != nil {
		t.Fatalf("handshake trusting the sink's CA: %v", err)
	}
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2 or later", st.Version)
	}
	// RFC 3207 4.2: the client must greet again inside TLS.
	sc.expect(503, "MAIL FROM:<a@example.org>")
	ext = strings.Split(sc.expect(250, "EHLO client.example.org"), "\n")
	if slices.Contains(ext, "STARTTLS") {
		t.Errorf("EHLO inside TLS still offers STARTTLS: %q", ext)
	}
	sc.expect(503, "STARTTLS")
	sc.expect(250, "MAIL FROM:<a@example.org>")
	sc.expect(250, "RCPT TO:<b@example.org>")
	sc.expect(354, "DATA")
	sc.expect(250, "Subject: tls\r\n\r\nx\r\n.")
	if got := s.Messages(); len(got) != 1 || !got[0].TLS {
		t.Fatalf("after a message inside TLS: %s", showMails(got))
	}
	sc.expect(221, "QUIT")

	// A plaintext message on another connection says so.
	if err := smtp.SendMail(s.Addr, nil, "a@example.org", []string{"b@example.org"}, []byte("Subject: x\r\n\r\nx\r\n")); err == nil {
		t.Error("smtp.SendMail, which trusts only the system's roots, delivered to the sink")
	}
	pc := dialSMTP(t, s)
	pc.expect(250, "HELO client.example.org")
	pc.expect(250, "MAIL FROM:<a@example.org>")
	pc.expect(250, "RCPT TO:<b@example.org>")
	pc.expect(354, "DATA")
	pc.expect(250, "Subject: plain\r\n\r\nx\r\n.")
	if got := s.Messages(); len(got) != 2 || got[1].TLS {
		t.Fatalf("after a plaintext message: %s", showMails(got))
	}
}

// TestSMTPSinkSTARTTLSPipelined: a command sent behind STARTTLS before the
// handshake was written in plaintext, so the sink must not obey it.
func TestSMTPSinkSTARTTLSPipelined(t *testing.T) {
	s := StartSMTP(t)
	sc := dialSMTP(t, s)
	sc.expect(250, "EHLO client.example.org")
	// One write, so that the sink reads both lines together.
	if _, err := sc.raw.Write([]byte("STARTTLS\r\nMAIL FROM:<a@example.org>\r\n")); err != nil {
		t.Fatal(err)
	}
	sc.expect(503, "")
	if _, err := sc.c.ReadLine(); err == nil {
		t.Error("connection still open after pipelined STARTTLS")
	}
}

func TestSMTPSinkCertificate(t *testing.T) {
	s, other := StartSMTP(t), StartSMTP(t)
	sc := dialSMTP(t, s)
	sc.expect(250, "EHLO client.example.org")
	// Take the certificate without judging it, to judge it below.
	st, err := sc.startTLS(&tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf := st.PeerCertificates[0]
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: s.RootCAs()}); err != nil {
			t.Errorf("certificate for %s with the sink's CA: %v", name, err)
		}
	}
	if err := leaf.VerifyHostname("mail.example.com"); err == nil {
		t.Error("certificate valid for mail.example.com")
	}
	var unknown x509.UnknownAuthorityError
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: other.RootCAs()}); !errors.As(err, &unknown) {
		t.Errorf("certificate with another sink's CA: %v, want unknown authority", err)
	}
	block, rest := pem.Decode(s.CAPEM())
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("CAPEM() = %q, want one CERTIFICATE block", s.CAPEM())
	}
	if ca, err := x509.ParseCertificate(block.Bytes); err != nil || !ca.IsCA || leaf.CheckSignatureFrom(ca) != nil {
		t.Errorf("CAPEM() is not the CA that signed the certificate (%v)", err)
	}
}

func TestSMTPSinkPlaintext(t *testing.T) {
	s := StartSMTP(t, SMTPPlaintext())
	if s.RootCAs() != nil || s.CAPEM() != nil {
		t.Error("a plaintext sink has a CA")
	}
	sc := dialSMTP(t, s)
	ext := strings.Split(sc.expect(250, "EHLO client.example.org"), "\n")
	for _, e := range ext {
		if strings.HasPrefix(e, "STARTTLS") || strings.HasPrefix(e, "AUTH") {
			t.Errorf("EHLO advertises %q", e)
		}
	}
	sc.expect(503, "STARTTLS")
	sc.expect(502, "AUTH PLAIN "+plain("", "u", "p"))
	if err := smtp.SendMail(s.Addr, nil, "a@example.org", []string{"b@example.org"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatalf("smtp.SendMail to a plaintext sink: %v", err)
	}
	if got := s.Messages(); len(got) != 1 || got[0].TLS {
		t.Fatalf("after smtp.SendMail: %s", showMails(got))
	}
}

func plain(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

func TestSMTPSinkAuth(t *testing.T) {
	s := StartSMTP(t, SMTPAuth("mailer", "s3cret"))
	sc := dialSMTP(t, s)
	sc.expect(503, "AUTH PLAIN "+plain("", "mailer", "s3cret"))
	ext := strings.Split(sc.expect(250, "EHLO client.example.org"), "\n")
	if slices.Contains(ext, "AUTH PLAIN") {
		t.Errorf("EHLO before TLS offers AUTH: %q", ext)
	}
	// The password must not be taken in plaintext, nor mail without it.
	sc.expect(538, "AUTH PLAIN "+plain("", "mailer", "s3cret"))
	sc.expect(530, "MAIL FROM:<a@example.org>")
	if _, err := sc.startTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: s.RootCAs()}); err != nil {
		t.Fatal(err)
	}
	ext = strings.Split(sc.expect(250, "EHLO client.example.org"), "\n")
	if !slices.Contains(ext, "AUTH PLAIN") {
		t.Errorf("EHLO inside TLS does not offer AUTH PLAIN: %q", ext)
	}
	sc.expect(504, "AUTH LOGIN")
	sc.expect(535, "AUTH PLAIN "+plain("", "mailer", "wrong"))
	sc.expect(535, "AUTH PLAIN "+plain("admin", "mailer", "s3cret"))
	sc.expect(501, "AUTH PLAIN !!!")
	sc.expect(334, "AUTH PLAIN")
	sc.expect(501, "*")
	sc.expect(530, "MAIL FROM:<a@example.org>")
	sc.expect(334, "AUTH PLAIN")
	sc.expect(235, plain("mailer", "mailer", "s3cret"))
	sc.expect(503, "AUTH PLAIN "+plain("", "mailer", "s3cret"))
	sc.expect(250, "MAIL FROM:<a@example.org>")
	sc.expect(503, "AUTH PLAIN "+plain("", "mailer", "s3cret"))
	sc.expect(250, "RCPT TO:<b@example.org>")
	sc.expect(354, "DATA")
	sc.expect(250, "Subject: auth\r\n\r\nx\r\n.")
	if got := s.Messages(); len(got) != 1 || got[0].User != "mailer" || !got[0].TLS {
		t.Fatalf("after an authenticated message: %s", showMails(got))
	}

	// Without TLS to offer, the sink takes the password in plaintext, as a
	// relay without a certificate does.
	p := StartSMTP(t, SMTPPlaintext(), SMTPAuth("mailer", "s3cret"))
	pc := dialSMTP(t, p)
	if ext := strings.Split(pc.expect(250, "EHLO client.example.org"), "\n"); !slices.Contains(ext, "AUTH PLAIN") {
		t.Errorf("plaintext sink's EHLO does not offer AUTH PLAIN: %q", ext)
	}
	pc.expect(235, "AUTH PLAIN "+plain("", "mailer", "s3cret"))
}

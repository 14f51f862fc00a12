package testenv

import (
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
	if err := smtp.SendMail(s.Addr, nil, "app@example.org", []string{"a@example.org", "b@example.org"}, []byte(msg)); err != nil {
		t.Fatalf("SendMail: %v", err)
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
		return smtp.SendMail(s.Addr, nil, "app@example.org", []string{"a@example.org"}, []byte("Subject: x\r\n\r\nbody\r\n"))
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
	for _, e := range ext {
		if strings.HasPrefix(e, "STARTTLS") || strings.HasPrefix(e, "AUTH") {
			t.Errorf("EHLO advertises %q", e)
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
		t.Fatalf("after dot-stuffed DATA: %q", got)
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
		t.Fatalf("Wait on an empty sink = %q", got)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > smtpWait {
		t.Errorf("Wait returned after %v, want about 50ms", d)
	}

	// Wait must wake for a message that arrives while it waits.
	go func() {
		time.Sleep(50 * time.Millisecond)
		smtp.SendMail(s.Addr, nil, "a@example.org", []string{"b@example.org"}, []byte("Subject: late\r\n\r\nx\r\n"))
	}()
	got := s.Wait(1, smtpWait)
	if len(got) != 1 || got[0].Header("Subject") != "late" {
		t.Fatalf("Wait(1) = %q", got)
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

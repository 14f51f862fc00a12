package testenv

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// smtpMaxLine bounds one line, terminator included. RFC 5321 asks for
	// 512 (commands) and 1000 (text); the slack lets a sloppy but harmless
	// client through while still refusing a line that never ends.
	smtpMaxLine = 4 << 10
	// smtpMaxMessage bounds one message after dot-unstuffing, so that a
	// runaway client cannot make a test eat memory.
	smtpMaxMessage = 1 << 20
	// smtpIdleTimeout bounds the wait for each line from a client. Cleanup
	// closes every connection anyway; this frees a stuck one mid-test.
	smtpIdleTimeout = 10 * time.Second
)

// Mail is one message the sink received.
type Mail struct {
	From string   // MAIL FROM address (without <>); "" for the null path <>
	To   []string // RCPT TO addresses, in the order given
	Data []byte   // the message as sent (headers + body), dot-unstuffed, CRLF kept
}

// Header returns the first occurrence of header name, parsed with net/mail.
// RFC 2047 encoded words (=?UTF-8?Q?...?=) are decoded, because a test
// wants to compare against the text the application meant; Data still has
// the bytes on the wire. It returns "" when the header is missing or the
// message does not parse.
func (m Mail) Header(name string) string {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return ""
	}
	v := msg.Header.Get(name)
	if dec, err := new(mime.WordDecoder).DecodeHeader(v); err == nil {
		return dec
	}
	return v
}

// Body returns the message body (after the blank line), line breaks as
// sent (CRLF). A quoted-printable or base64 Content-Transfer-Encoding is
// decoded; if decoding fails the raw body is returned, so that a test's
// comparison shows what actually arrived. Multipart bodies are not split.
func (m Mail) Body() string {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return ""
	}
	raw, err := io.ReadAll(msg.Body)
	if err != nil {
		return ""
	}
	var dec io.Reader
	switch strings.ToLower(strings.TrimSpace(msg.Header.Get("Content-Transfer-Encoding"))) {
	case "quoted-printable":
		dec = quotedprintable.NewReader(bytes.NewReader(raw))
	case "base64":
		dec = base64.NewDecoder(base64.StdEncoding, bytes.NewReader(raw))
	default:
		return string(raw)
	}
	out, err := io.ReadAll(dec)
	if err != nil {
		return string(raw)
	}
	return string(out)
}

// SMTPSink is a small SMTP server (a subset of RFC 5321) on loopback that
// keeps every message it accepts, so that the application's real SMTP
// client can be tested over a real TCP connection.
type SMTPSink struct {
	Addr string // "127.0.0.1:PORT"

	ln   net.Listener
	wg   sync.WaitGroup
	fail atomic.Bool
	// idle is the per-line read timeout in nanoseconds; a field rather than
	// the constant so a test can shorten it without racing other sinks.
	idle atomic.Int64

	mu      sync.Mutex
	msgs    []Mail
	arrived chan struct{} // closed and replaced whenever a message is stored
	conns   map[net.Conn]struct{}
	closed  bool
	done    chan struct{} // closed when the sink shuts down, so Wait stops early
}

// StartSMTP listens on a free loopback port and serves SMTP until
// t.Cleanup closes the listener and every open connection.
func StartSMTP(t testing.TB) *SMTPSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: SMTP sink: listen: %v", err)
	}
	s := &SMTPSink{
		Addr:    ln.Addr().String(),
		ln:      ln,
		arrived: make(chan struct{}),
		conns:   make(map[net.Conn]struct{}),
		done:    make(chan struct{}),
	}
	s.idle.Store(int64(smtpIdleTimeout))
	s.wg.Go(s.accept)
	t.Cleanup(s.close)
	return s
}

// Messages returns a copy of everything received so far, in arrival order.
func (s *SMTPSink) Messages() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot()
}

// Wait blocks until at least n messages arrived or timeout passes, and
// returns what it has either way; judging a short count is the caller's
// business, since some tests expect nothing to arrive.
func (s *SMTPSink) Wait(n int, timeout time.Duration) []Mail {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			defer s.mu.Unlock()
			return s.snapshot()
		}
		arrived := s.arrived
		s.mu.Unlock()
		select {
		case <-arrived:
		case <-timer.C:
			return s.Messages()
		case <-s.done:
			return s.Messages()
		}
	}
}

// Fail makes the sink answer every following RCPT TO with 451, a temporary
// failure, so that delivery errors can be tested; Fail(false) undoes it.
func (s *SMTPSink) Fail(on bool) { s.fail.Store(on) }

// snapshot copies deeply so that a caller mutating a result cannot change
// what another caller sees. s.mu must be held.
func (s *SMTPSink) snapshot() []Mail {
	out := make([]Mail, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = Mail{From: m.From, To: append([]string(nil), m.To...), Data: bytes.Clone(m.Data)}
	}
	return out
}

func (s *SMTPSink) store(m Mail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.arrived)
	s.arrived = make(chan struct{})
}

func (s *SMTPSink) accept() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			// The listener is closed only by close; any other accept error
			// on loopback would repeat forever, so stop either way.
			return
		}
		if !s.track(conn) {
			conn.Close()
			return
		}
		s.wg.Go(func() {
			defer s.untrack(conn)
			s.serve(conn)
		})
	}
}

// track registers conn so close can interrupt it; it reports false once
// the sink is shutting down, so a late accept does not outlive cleanup.
func (s *SMTPSink) track(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[conn] = struct{}{}
	return true
}

func (s *SMTPSink) untrack(conn net.Conn) {
	conn.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, conn)
}

func (s *SMTPSink) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		s.ln.Close()
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	// Waiting keeps a session goroutine from outliving the test that owns it.
	s.wg.Wait()
}

// smtpSession is the state of one connection: RFC 5321's greeting and
// mail-transaction states, which decide what is out of order (503).
type smtpSession struct {
	sink    *SMTPSink
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	greeted bool
	inMail  bool
	from    string
	to      []string
}

func (s *SMTPSink) serve(conn net.Conn) {
	ss := &smtpSession{sink: s, conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}
	if ss.reply(220, "localhost ESMTP stepup test sink") != nil {
		return
	}
	for {
		line, tooLong, err := ss.readLine()
		if err != nil {
			ss.hangUp(err)
			return
		}
		if tooLong {
			err = ss.reply(500, "Line too long")
		} else {
			var quit bool
			quit, err = ss.command(trimEOL(line))
			if quit {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// command handles one command line and reports whether the session ended.
func (ss *smtpSession) command(line []byte) (quit bool, err error) {
	verb, arg, _ := strings.Cut(string(line), " ")
	switch strings.ToUpper(verb) {
	case "EHLO":
		if strings.TrimSpace(arg) == "" {
			return false, ss.reply(501, "EHLO needs a domain")
		}
		ss.greeted = true
		ss.reset()
		// No STARTTLS or AUTH: net/smtp would then insist on them, and the
		// sink has neither a certificate nor users.
		return false, ss.replyLines(250,
			"localhost greets "+strings.TrimSpace(arg),
			"8BITMIME",
			fmt.Sprintf("SIZE %d", smtpMaxMessage),
			"SMTPUTF8")
	case "HELO":
		if strings.TrimSpace(arg) == "" {
			return false, ss.reply(501, "HELO needs a domain")
		}
		ss.greeted = true
		ss.reset()
		return false, ss.reply(250, "localhost")
	case "MAIL":
		if !ss.greeted {
			return false, ss.reply(503, "Send EHLO or HELO first")
		}
		if ss.inMail {
			return false, ss.reply(503, "Nested MAIL command")
		}
		from, ok := parsePath(arg, "FROM:")
		if !ok {
			return false, ss.reply(501, "Syntax: MAIL FROM:<address>")
		}
		ss.inMail, ss.from = true, from
		return false, ss.reply(250, "OK")
	case "RCPT":
		if !ss.inMail {
			return false, ss.reply(503, "Send MAIL first")
		}
		to, ok := parsePath(arg, "TO:")
		if !ok || to == "" {
			return false, ss.reply(501, "Syntax: RCPT TO:<address>")
		}
		if ss.sink.fail.Load() {
			return false, ss.reply(451, "Temporary failure (SMTPSink.Fail)")
		}
		ss.to = append(ss.to, to)
		return false, ss.reply(250, "OK")
	case "DATA":
		if !ss.inMail || len(ss.to) == 0 {
			return false, ss.reply(503, "Send MAIL and RCPT first")
		}
		return false, ss.data()
	case "RSET":
		ss.reset()
		return false, ss.reply(250, "OK")
	case "NOOP":
		return false, ss.reply(250, "OK")
	case "QUIT":
		ss.reply(221, "Bye")
		return true, nil
	default:
		return false, ss.reply(500, "Command not recognized")
	}
}

// data reads the message after DATA. It always reads up to the lone dot,
// even past a limit, so that the client's next command is not taken from
// the middle of its message.
func (ss *smtpSession) data() error {
	if err := ss.reply(354, "End data with <CR><LF>.<CR><LF>"); err != nil {
		return err
	}
	var msg []byte
	var lineTooLong, tooBig bool
	for {
		line, tooLong, err := ss.readLine()
		if err != nil {
			ss.hangUp(err)
			return err
		}
		if tooLong {
			lineTooLong = true
			continue
		}
		if bytes.Equal(trimEOL(line), []byte(".")) {
			break
		}
		line = bytes.TrimPrefix(line, []byte("."))
		if len(msg)+len(line) > smtpMaxMessage {
			tooBig = true
		}
		if !tooBig && !lineTooLong {
			msg = append(msg, line...)
		}
	}
	m := Mail{From: ss.from, To: ss.to}
	ss.reset()
	switch {
	case lineTooLong:
		return ss.reply(500, "Line too long")
	case tooBig:
		return ss.reply(552, fmt.Sprintf("Message exceeds %d bytes", smtpMaxMessage))
	}
	m.Data = msg
	ss.sink.store(m)
	return ss.reply(250, "OK: queued")
}

func (ss *smtpSession) reset() {
	ss.inMail, ss.from, ss.to = false, "", nil
}

// readLine returns one line with its terminator. A line longer than
// smtpMaxLine is consumed to its end but returned empty and flagged, so
// memory stays bounded and the session stays in step with the client.
func (ss *smtpSession) readLine() (line []byte, tooLong bool, err error) {
	ss.conn.SetDeadline(time.Now().Add(time.Duration(ss.sink.idle.Load())))
	for {
		chunk, err := ss.r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > smtpMaxLine {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return line, tooLong, err
	}
}

// hangUp tells a client that went silent why it is cut off (RFC 5321
// 4.5.3.2 allows 421 then close); other read errors leave no one to tell.
func (ss *smtpSession) hangUp(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		ss.conn.SetDeadline(time.Now().Add(time.Second))
		ss.reply(421, "Timeout, closing connection")
	}
}

func (ss *smtpSession) reply(code int, text string) error {
	return ss.replyLines(code, text)
}

// replyLines writes a (possibly multi-line) reply in one flush; every line
// but the last carries a hyphen after the code, as RFC 5321 4.2.1 requires.
func (ss *smtpSession) replyLines(code int, lines ...string) error {
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(ss.w, "%d%s%s\r\n", code, sep, l)
	}
	return ss.w.Flush()
}

// parsePath takes "FROM:<addr> PARAMS" (or TO:) and returns addr. The
// parameters net/smtp adds (BODY=8BITMIME, SMTPUTF8) are accepted and
// ignored, since the sink stores bytes as they come.
func parsePath(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimLeft(arg[len(prefix):], " ")
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	addr, _, ok := strings.Cut(rest[1:], ">")
	if !ok || strings.ContainsAny(addr, "<> ") {
		return "", false
	}
	return addr, true
}

func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

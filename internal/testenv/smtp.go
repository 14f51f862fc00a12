package testenv

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
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
	TLS  bool     // the message came inside STARTTLS
	User string   // who authenticated with AUTH PLAIN; "" when no one did
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
// client can be tested over a real TCP connection. It offers STARTTLS
// (RFC 3207) unless started with SMTPPlaintext, because production relays
// do and a client that cannot upgrade should fail here rather than there;
// its certificate comes from a CA of its own, which RootCAs hands to the
// client under test.
type SMTPSink struct {
	Addr string // "127.0.0.1:PORT"

	plaintext      bool        // offer no STARTTLS
	tls            *tls.Config // nil when plaintext
	caPEM          []byte
	user, password string // AUTH PLAIN credentials; "" offers no AUTH

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

// SMTPOption changes what a sink from StartSMTP offers.
type SMTPOption func(*SMTPSink)

// SMTPPlaintext makes the sink offer no STARTTLS, like a relay without a
// certificate.
func SMTPPlaintext() SMTPOption { return func(s *SMTPSink) { s.plaintext = true } }

// SMTPAuth makes the sink take mail only from a client that authenticated
// with AUTH PLAIN as user and password, and offer AUTH only inside TLS
// (unless the sink is plaintext), as relays that take passwords do; so a
// client that sends its password before STARTTLS is refused.
func SMTPAuth(user, password string) SMTPOption {
	return func(s *SMTPSink) { s.user, s.password = user, password }
}

// StartSMTP listens on a free loopback port and serves SMTP until
// t.Cleanup closes the listener and every open connection.
func StartSMTP(t testing.TB, opts ...SMTPOption) *SMTPSink {
	t.Helper()
	s := &SMTPSink{
		arrived: make(chan struct{}),
		conns:   make(map[net.Conn]struct{}),
		done:    make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if !s.plaintext {
		cert, caPEM, err := newSMTPCert()
		if err != nil {
			t.Fatalf("testenv: SMTP sink: certificate: %v", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.caPEM = caPEM
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: SMTP sink: listen: %v", err)
	}
	s.Addr, s.ln = ln.Addr().String(), ln
	s.idle.Store(int64(smtpIdleTimeout))
	s.wg.Go(s.accept)
	t.Cleanup(s.close)
	return s
}

// RootCAs returns a pool holding the sink's CA, for the client's
// tls.Config (or mfa.SMTP.RootCAs); nil when the sink is plaintext. Each
// call returns a new pool, so a caller adding to it changes no one else's.
func (s *SMTPSink) RootCAs() *x509.CertPool {
	if s.caPEM == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.caPEM)
	return pool
}

// CAPEM returns the sink's CA certificate in PEM, to write into a CA
// bundle file; nil when the sink is plaintext.
func (s *SMTPSink) CAPEM() []byte { return bytes.Clone(s.caPEM) }

// newSMTPCert makes a CA and a leaf it signs for the loopback names, so
// that a client verifies the sink as it would a relay: chain and name.
// Every sink has a CA of its own, so one sink's pool does not trust
// another's certificate.
func newSMTPCert() (leaf tls.Certificate, caPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return leaf, nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return leaf, nil, err
	}
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		return n
	}
	// An hour back leaves room for a clock that steps during a run; a day
	// ahead outlasts any test.
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "stepup test SMTP sink CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return leaf, nil, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return leaf, nil, err
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return leaf, nil, err
	}
	leaf = tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	return leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
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
		out[i] = m
		out[i].To, out[i].Data = append([]string(nil), m.To...), bytes.Clone(m.Data)
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
// mail-transaction states, which decide what is out of order (503), and
// whether TLS and AUTH have happened.
type smtpSession struct {
	sink    *SMTPSink
	conn    net.Conn // the *tls.Conn after STARTTLS
	r       *bufio.Reader
	w       *bufio.Writer
	greeted bool
	tls     bool
	user    string
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
		ext := []string{"localhost greets " + strings.TrimSpace(arg), "8BITMIME", fmt.Sprintf("SIZE %d", smtpMaxMessage)}
		if ss.sink.tls != nil && !ss.tls {
			ext = append(ext, "STARTTLS")
		}
		if ss.offersAuth() {
			ext = append(ext, "AUTH PLAIN")
		}
		return false, ss.replyLines(250, append(ext, "SMTPUTF8")...)
	case "HELO":
		if strings.TrimSpace(arg) == "" {
			return false, ss.reply(501, "HELO needs a domain")
		}
		ss.greeted = true
		ss.reset()
		return false, ss.reply(250, "localhost")
	case "STARTTLS":
		return ss.startTLS(arg)
	case "AUTH":
		return false, ss.auth(arg)
	case "MAIL":
		if !ss.greeted {
			return false, ss.reply(503, "Send EHLO or HELO first")
		}
		if ss.inMail {
			return false, ss.reply(503, "Nested MAIL command")
		}
		if ss.sink.user != "" && ss.user == "" {
			return false, ss.reply(530, "5.7.0 Authentication required")
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
	m := Mail{From: ss.from, To: ss.to, TLS: ss.tls, User: ss.user}
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

// startTLS handles STARTTLS and reports whether the session ended: after a
// failed handshake there is no channel left to talk on.
func (ss *smtpSession) startTLS(arg string) (quit bool, err error) {
	switch {
	case ss.sink.tls == nil || ss.tls:
		return false, ss.reply(503, "STARTTLS not offered")
	case !ss.greeted:
		return false, ss.reply(503, "Send EHLO first")
	case strings.TrimSpace(arg) != "":
		return false, ss.reply(501, "Syntax: STARTTLS")
	case ss.r.Buffered() > 0:
		// What follows STARTTLS in the same packet was sent in plaintext;
		// obeying it inside TLS would let whoever injected it act for the
		// client (CVE-2011-0411), so the session ends.
		ss.reply(503, "Commands pipelined after STARTTLS")
		return true, nil
	}
	if err := ss.reply(220, "Ready to start TLS"); err != nil {
		return true, err
	}
	tc := tls.Server(ss.conn, ss.sink.tls)
	tc.SetDeadline(time.Now().Add(time.Duration(ss.sink.idle.Load())))
	if err := tc.Handshake(); err != nil {
		return true, err
	}
	// RFC 3207 4.2: nothing learnt before TLS carries over, not even EHLO.
	ss.conn, ss.r, ss.w = tc, bufio.NewReader(tc), bufio.NewWriter(tc)
	ss.tls, ss.greeted, ss.user = true, false, ""
	ss.reset()
	return false, nil
}

// offersAuth reports whether EHLO lists AUTH: with credentials set, and
// inside TLS unless the sink has none.
func (ss *smtpSession) offersAuth() bool {
	return ss.sink.user != "" && (ss.tls || ss.sink.tls == nil)
}

// auth handles AUTH PLAIN (RFC 4954, RFC 4616), with the initial response
// on the command line as net/smtp sends it or after a 334 prompt.
func (ss *smtpSession) auth(arg string) error {
	switch {
	case ss.sink.user == "":
		return ss.reply(502, "AUTH not offered")
	case !ss.greeted:
		return ss.reply(503, "Send EHLO first")
	case ss.user != "":
		return ss.reply(503, "Already authenticated")
	case ss.inMail:
		return ss.reply(503, "AUTH not allowed in a mail transaction")
	case !ss.offersAuth():
		return ss.reply(538, "5.7.11 Encryption required for requested authentication mechanism")
	}
	mech, resp, _ := strings.Cut(strings.TrimSpace(arg), " ")
	if !strings.EqualFold(mech, "PLAIN") {
		return ss.reply(504, "5.5.4 Unrecognized authentication type")
	}
	if resp == "" {
		if err := ss.reply(334, ""); err != nil {
			return err
		}
		line, tooLong, err := ss.readLine()
		if err != nil {
			ss.hangUp(err)
			return err
		}
		if tooLong {
			return ss.reply(500, "Line too long")
		}
		resp = string(trimEOL(line))
	}
	if resp == "*" {
		return ss.reply(501, "5.0.0 Authentication cancelled")
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	parts := strings.Split(string(raw), "\x00")
	if err != nil || len(parts) != 3 {
		return ss.reply(501, "5.5.2 Cannot decode the PLAIN response")
	}
	if authz, user, pass := parts[0], parts[1], parts[2]; (authz != "" && authz != user) || user != ss.sink.user || pass != ss.sink.password {
		return ss.reply(535, "5.7.8 Authentication credentials invalid")
	}
	ss.user = parts[1]
	return ss.reply(235, "2.7.0 Authentication successful")
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

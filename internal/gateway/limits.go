package gateway

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// source is the address a connection's pre-authentication limit is
// counted against: an IPv4 address, or the /64 of an IPv6 one, since a
// single host is commonly handed a whole /64 and could otherwise pick a
// new address for every connection. The zero source stands for every
// connection whose address is not IP.
type source = netip.Prefix

func sourceOf(a net.Addr) source {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	default:
		if a == nil {
			return source{}
		}
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return source{}
		}
		ip = ap.Addr()
	}
	// A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return source{}
	}
	return p
}

// preAuth counts the connections that have not authenticated yet: at most
// perSource of them from one source, and at most max in all, so that the
// rest of the MaxConns slots always stay for connections that have
// authenticated.
//
// The global limit does not refuse: when it is reached, a newcomer takes
// the place of the longest-waiting connection of the source that has the
// most waiting. Refusing would let whoever keeps max idle sockets open
// from max/perSource addresses (16 IPv4 addresses, or /64s of one /56, by
// default) lock every new login out, reconnecting whenever the handshake
// timeout closes one. Displacing them instead, a real client, which
// needs milliseconds to authenticate, is itself displaced only if the
// flood opens max new connections within those milliseconds, and, as
// long as it comes from an address of its own, only once every waiting
// source is down to one connection.
//
// There is no random early drop below max, as OpenSSH's MaxStartups
// start:rate:full has: it refuses real clients as readily as a flood's,
// which retries for free, and it sheds the cost of a process per
// connection that a goroutine here does not have; the handshakes at work
// at once are bounded by max anyway.
type preAuth struct {
	perSource, max int

	mu  sync.Mutex
	seq uint64           // arrivals so far
	in  map[*conn]uint64 // who is waiting, and when they arrived
	n   map[source]int   // how many are waiting per source; only sources with some
}

func newPreAuth(perSource, max int) *preAuth {
	return &preAuth{perSource: perSource, max: max, in: map[*conn]uint64{}, n: map[source]int{}}
}

// enter counts c, or reports false, counting nothing, when its source
// already has perSource connections waiting. When max are waiting, c
// takes the place of victim, which is no longer counted and is the
// caller's to close.
func (p *preAuth) enter(c *conn) (victim *conn, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[c.source] >= p.perSource {
		return nil, false
	}
	if len(p.in) >= p.max {
		if victim = p.victim(); victim != nil {
			p.remove(victim)
		}
	}
	p.seq++
	p.in[c] = p.seq
	p.n[c.source]++
	return victim, true
}

// victim is the oldest waiting connection of the source with the most
// waiting; p.mu is held. A scan, at most max long, and only when full.
func (p *preAuth) victim() *conn {
	var v *conn
	var vn int
	var vseq uint64
	for c, seq := range p.in {
		n := p.n[c.source]
		if v == nil || n > vn || n == vn && seq < vseq {
			v, vn, vseq = c, n, seq
		}
	}
	return v
}

// leave uncounts a connection that authenticated or went away. It
// reports false when c was no longer counted: a newcomer took its place,
// and closes it.
func (p *preAuth) leave(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.in[c]; !ok {
		return false
	}
	p.remove(c)
	return true
}

func (p *preAuth) remove(c *conn) {
	delete(p.in, c)
	if p.n[c.source] <= 1 {
		delete(p.n, c.source)
		return
	}
	p.n[c.source]--
}

// count is how many connections from src are unauthenticated now.
func (p *preAuth) count(src source) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[src]
}

// total is how many connections are unauthenticated now.
func (p *preAuth) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.in)
}

// refusalLogEvery is how often a refusal that keeps happening is logged.
const refusalLogEvery = time.Minute

// maxTrackedSources bounds the distinct sources a refusal summary counts,
// and so its memory under a flood from many addresses.
const maxTrackedSources = 1024

// refusalLog logs one kind of refused connection without letting a flood
// of them flood the log: the first refusal at once, with its address, and
// then, for as long as refusals keep coming, one line per period with how
// many there were and from how many sources.
type refusalLog struct {
	log   *slog.Logger
	msg   string
	attrs []any // constant attributes, such as the limit
	every time.Duration

	mu      sync.Mutex
	quiet   *time.Timer // set while later refusals are only counted
	count   int
	sources map[source]struct{}
	closed  bool
}

func newRefusalLog(log *slog.Logger, every time.Duration, msg string, attrs ...any) *refusalLog {
	return &refusalLog{log: log, msg: msg, attrs: attrs, every: every}
}

// refused records a connection from remote refused.
func (r *refusalLog) refused(remote net.Addr, src source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.quiet == nil {
		r.log.Warn(r.msg, append([]any{"remote", remote.String(), "source", src.String(), "further_refusals_logged_every", r.every}, r.attrs...)...)
		r.quiet = time.AfterFunc(r.every, r.summarize)
		return
	}
	r.count++
	if r.sources == nil {
		r.sources = map[source]struct{}{}
	}
	if len(r.sources) < maxTrackedSources {
		r.sources[src] = struct{}{}
	}
}

// summarize ends a period: it logs what was refused during it, if
// anything, and starts another, or else lets the next refusal be logged at
// once.
func (r *refusalLog) summarize() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.count == 0 {
		r.quiet = nil
		return
	}
	r.logSummary()
	r.quiet = time.AfterFunc(r.every, r.summarize)
}

func (r *refusalLog) logSummary() {
	r.log.Warn(r.msg, append([]any{"refused", r.count, "sources", len(r.sources), "period", r.every}, r.attrs...)...)
	r.count = 0
	clear(r.sources)
}

// close logs what is still unreported and stops the timer.
func (r *refusalLog) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	if r.quiet != nil {
		r.quiet.Stop()
	}
	if r.count > 0 {
		r.logSummary()
	}
}

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

// preAuth counts, per source, the connections that have not authenticated
// yet, and refuses a source more than max of them.
type preAuth struct {
	max int

	mu sync.Mutex
	n  map[source]int
}

func newPreAuth(max int) *preAuth { return &preAuth{max: max, n: map[source]int{}} }

// enter counts one more connection from src, or reports false, counting
// nothing, when src already has max.
func (p *preAuth) enter(src source) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[src] >= p.max {
		return false
	}
	p.n[src]++
	return true
}

// leave uncounts a connection that authenticated or went away.
func (p *preAuth) leave(src source) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[src] <= 1 {
		delete(p.n, src) // the map holds only sources with someone waiting
		return
	}
	p.n[src]--
}

// count is how many connections from src are unauthenticated now.
func (p *preAuth) count(src source) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[src]
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

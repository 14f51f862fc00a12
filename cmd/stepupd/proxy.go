package main

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// fromTrustedProxies sets r.RemoteAddr to the client's address when the
// request came through one of our load balancers, so that per-address
// throttles count people, not the balancer. Only the hops our proxies added
// are believed: X-Forwarded-For is read from the right, skipping trusted
// proxies, and the first address that is not one of them is the client.
// Anything left of it was written by the client and may be forged.
func fromTrustedProxies(trusted []netip.Prefix) func(http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(next http.Handler) http.Handler {
		if len(trusted) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if client, ok := forwardedClient(r, isTrusted); ok {
				r.RemoteAddr = net.JoinHostPort(client.String(), "0")
			}
			next.ServeHTTP(w, r)
		})
	}
}

func forwardedClient(r *http.Request, isTrusted func(netip.Addr) bool) (netip.Addr, bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !isTrusted(peer.Addr()) {
		return netip.Addr{}, false
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peer.Addr()
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // garbage: the last good hop is as far as we can see
		}
		client = a.Unmap()
		if !isTrusted(client) {
			break
		}
	}
	return client, client != peer.Addr()
}

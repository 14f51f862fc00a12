package main

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestFromTrustedProxies(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no header", "10.0.0.5:4000", nil, "10.0.0.5:4000"},
		{"untrusted peer's header is ignored", "203.0.113.9:4000", []string{"198.51.100.1"}, "203.0.113.9:4000"},
		{"one proxy", "10.0.0.5:4000", []string{"198.51.100.1"}, "198.51.100.1:0"},
		{"forged left part is skipped", "10.0.0.5:4000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1:0"},
		{"two proxies", "10.0.0.5:4000", []string{"198.51.100.1, 10.1.2.3"}, "198.51.100.1:0"},
		{"several headers are one list", "10.0.0.5:4000", []string{"1.2.3.4", "198.51.100.1, 10.1.2.3"}, "198.51.100.1:0"},
		{"garbage stops the walk", "10.0.0.5:4000", []string{"198.51.100.1, junk, 10.1.2.3"}, "10.1.2.3:0"},
		{"all hops trusted", "10.0.0.5:4000", []string{"10.9.9.9, 10.1.2.3"}, "10.9.9.9:0"},
		{"ipv6", "[fd00::1]:4000", []string{"2001:db8::7"}, "[2001:db8::7]:0"},
		{"ipv4-mapped peer", "[::ffff:10.0.0.5]:4000", []string{"198.51.100.1"}, "198.51.100.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			h := fromTrustedProxies(trusted)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != tc.want {
				t.Errorf("RemoteAddr = %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("no trusted proxies: header ignored", func(t *testing.T) {
		var got string
		h := fromTrustedProxies(nil)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.0.0.5:4000"
		r.Header.Set("X-Forwarded-For", "198.51.100.1")
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got != "10.0.0.5:4000" {
			t.Errorf("RemoteAddr = %q", got)
		}
	})
}

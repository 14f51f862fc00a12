package authz_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

func kids(t *testing.T, issuer string) map[string]bool {
	t.Helper()
	resp, err := http.Get(issuer + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid, Alg, Use string
			D             string `json:"d"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range set.Keys {
		if k.D != "" {
			t.Fatal("the JWKS publishes a private key")
		}
		if k.Kid == "" || k.Alg == "" || k.Use != "sig" {
			t.Fatalf("key without kid, alg or use: %+v", k)
		}
		out[k.Kid] = true
	}
	return out
}

// TestKeyRotationAcrossReplicas: two servers share one store. The key a
// rotation on one makes current was published by both a rotation period
// earlier, so the other replica (whose cached set predates the rotation)
// publishes and accepts it at once; retired keys stay published until what
// they signed has expired.
func TestKeyRotationAcrossReplicas(t *testing.T) {
	clk := &clock{}
	shared := memory.New(memory.Config{Now: clk.Now})
	var srvA *authz.Server
	share := func(c *authz.Config) { c.Store, c.Now = shared, clk.Now }
	a := newTestServer(t, func(c *authz.Config) {
		share(c)
		var err error
		if srvA, err = authz.New(*c); err != nil {
			t.Fatal(err)
		}
	})
	a.Config.Handler = srvA.Handler() // the instance we can rotate
	b := newTestServer(t, share)

	cc := clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: a.Issuer + "/oauth2/token", Scopes: []string{"access.read"}}
	signingKid := func() string {
		tok, err := cc.Token(bg)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := jwtParts(t, tok.AccessToken)
		if !active(t, b, tok.AccessToken) {
			t.Fatal("B rejects a token signed by A")
		}
		return h["kid"].(string)
	}
	oldKid := signingKid()
	before := kids(t, b.Issuer)
	if len(before) != 4 {
		t.Fatalf("want the current and next ES256 and RS256 keys, got %v", before)
	}
	if err := srvA.RotateKeys(bg); err != nil {
		t.Fatal(err)
	}
	if got := kids(t, a.Issuer); len(got) != 6 {
		t.Fatalf("after rotation A publishes %v, want 2 current + 2 next + 2 retired", got)
	}

	// A signs with its new key, which B's JWKS (still cached from before the
	// rotation) already had, and B accepts the token: no reload, no window.
	newKid := signingKid()
	if newKid == oldKid || !before[newKid] {
		t.Fatalf("A signs with %s after rotation; want a key other than %s that was published before: %v", newKid, oldKid, before)
	}
	if !kids(t, b.Issuer)[newKid] {
		t.Fatal("B does not publish A's new signing key")
	}

	// B's JWKS catches up with the new next keys within its refresh interval.
	clk.Advance(2 * time.Minute)
	if got := kids(t, b.Issuer); len(got) != 6 {
		t.Fatalf("B publishes %v after a minute, want the 6 keys A publishes", got)
	}
	// Retired keys go once every token they signed has expired.
	clk.Advance(2 * time.Hour)
	after := kids(t, b.Issuer)
	var gone []string
	for kid := range before {
		if !after[kid] {
			gone = append(gone, kid)
		}
	}
	if len(gone) != 2 || !slices.Contains(gone, oldKid) || after[oldKid] {
		t.Errorf("two hours later, want the 2 formerly current keys (with %s) gone; gone: %v", oldKid, gone)
	}
	if len(after) != 4 {
		t.Errorf("want the 2 current and 2 next keys, got %v", after)
	}
}

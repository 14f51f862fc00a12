package authz_test

import (
	"encoding/json"
	"net/http"
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

// TestKeyRotationAcrossReplicas: two servers share one store. A rotation
// on one is used by the other for verification at once (unknown kid) and
// published by it within its cache interval; retired keys stay published
// until what they signed has expired.
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

	before := kids(t, b.Issuer)
	if len(before) != 2 {
		t.Fatalf("want one ES256 and one RS256 key, got %v", before)
	}
	if err := srvA.RotateKeys(bg); err != nil {
		t.Fatal(err)
	}
	rotated := kids(t, a.Issuer)
	if len(rotated) != 4 {
		t.Fatalf("after rotation A publishes %d keys, want 2 new + 2 retired", len(rotated))
	}

	// A token signed by A's new key is accepted by B right away.
	clk.Advance(10 * time.Second) // past B's guard against reload storms
	cc := clientcredentials.Config{ClientID: svcClient, ClientSecret: svcSecret, TokenURL: a.Issuer + "/oauth2/token", Scopes: []string{"access.read"}}
	tok, err := cc.Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := jwtParts(t, tok.AccessToken)
	if before[h["kid"].(string)] {
		t.Fatal("A still signs with the retired key")
	}
	if !active(t, b, tok.AccessToken) {
		t.Fatal("B rejects a token signed with A's new key")
	}

	// B's JWKS catches up within its refresh interval.
	clk.Advance(2 * time.Minute)
	if got := kids(t, b.Issuer); len(got) != 4 {
		t.Fatalf("B publishes %v after a minute, want the 4 keys A publishes", got)
	}
	// Retired keys go once every token they signed has expired.
	clk.Advance(2 * time.Hour)
	after := kids(t, b.Issuer)
	for kid := range before {
		if after[kid] {
			t.Errorf("retired key %s still published two hours later", kid)
		}
	}
	if len(after) != 2 {
		t.Errorf("want the 2 current keys, got %v", after)
	}
}

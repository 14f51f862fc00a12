package testserver

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stepup-dev/stepup/authz"
)

func TestStartServesItsOwnIssuer(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "localhost"} {
		issuer := StartAs(t, host, authz.Config{})
		if !strings.HasPrefix(issuer, "http://"+host+":") {
			t.Fatalf("issuer %q does not name %s", issuer, host)
		}
		resp, err := http.Get(issuer + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Issuer string }
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || doc.Issuer != issuer {
			t.Fatalf("discovery at %s names issuer %q (%v)", issuer, doc.Issuer, err)
		}
	}
}

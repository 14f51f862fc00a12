package authz_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stepup-dev/stepup/authz"
	"github.com/stepup-dev/stepup/authz/storage/memory"
)

// FuzzTokenEndpoint throws arbitrary bodies, content types and basic
// credentials at the token endpoint. Whatever arrives, the answer is a
// client error or success, in JSON, never a 5xx.
func FuzzTokenEndpoint(f *testing.F) {
	seeds := []struct{ body, ctype, user, pass string }{
		{"grant_type=client_credentials&scope=access.read", "application/x-www-form-urlencoded", svcClient, svcSecret},
		{"grant_type=authorization_code&code=stpc_00000000-0000-0000-0000-000000000000.AAAA&client_id=stepup-cli&code_verifier=x&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcallback", "application/x-www-form-urlencoded", "", ""},
		{"grant_type=refresh_token&refresh_token=stpr_a.b&client_id=stepup-cli", "application/x-www-form-urlencoded", "", ""},
		{"grant_type=refresh_token&refresh_token=stpr_" + strings.Repeat("A", 43) + "." + strings.Repeat("B", 43), "application/x-www-form-urlencoded", cliClient, ""},
		{"grant_type=authorization_code&grant_type=refresh_token", "application/x-www-form-urlencoded", "", ""},
		{"--x\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--x--\r\n", "multipart/form-data; boundary=x", svcClient, svcSecret},
		{`{"grant_type":"client_credentials"}`, "application/json", svcClient, svcSecret},
		{"%zz=%%", "application/x-www-form-urlencoded", "\x00", "\xff"},
	}
	for _, s := range seeds {
		f.Add(s.body, s.ctype, s.user, s.pass)
	}
	srv, err := authz.New(func() authz.Config {
		c := baseConfig(memory.New(memory.Config{}), nil)
		c.Issuer = "http://127.0.0.1:1"
		return c
	}())
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body, ctype, user, pass string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		if user != "" || pass != "" {
			req.SetBasicAuth(user, pass)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q (%s): %s", rec.Code, body, ctype, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("status %d with a non-JSON body %q", rec.Code, rec.Body)
		}
		if rec.Code >= 400 && out["error"] == nil {
			t.Fatalf("status %d without an OAuth error: %s", rec.Code, rec.Body)
		}
	})
}

package authz_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestDiscoveryGolden pins the discovery document, the contract every
// relying party and our own tools read. Run with -update after a
// deliberate change, and review the diff.
func TestDiscoveryGolden(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, err := http.Get(ts.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(doc, "", "  ")
	got = bytes.ReplaceAll(got, []byte(ts.Issuer), []byte("ISSUER"))
	got = append(got, '\n')
	const golden = "testdata/discovery.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("discovery changed; if deliberate, run go test ./authz -run DiscoveryGolden -update\ngot:\n%s", got)
	}
}

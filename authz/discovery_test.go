package authz_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
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

// TestDiscoveryDeviceGrant: discovery names the device authorization
// endpoint and grant (RFC 8628 §4), and the endpoint it names answers.
func TestDiscoveryDeviceGrant(t *testing.T) {
	ts := newTestServer(t, withDevice)
	resp, err := http.Get(ts.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		DeviceEndpoint string   `json:"device_authorization_endpoint"`
		GrantTypes     []string `json:"grant_types_supported"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.DeviceEndpoint != ts.Issuer+"/oauth2/device_authorization" || !slices.Contains(doc.GrantTypes, deviceGrant) {
		t.Fatalf("discovery: %+v", doc)
	}
	if status, body := postForm(t, doc.DeviceEndpoint, url.Values{"client_id": {cliClient}}, "", ""); status != http.StatusOK || body["device_code"] == nil {
		t.Fatalf("the advertised endpoint: %d %v", status, body)
	}
}

// TestDiscoverySSHRevocation: discovery names the revocation list in both
// forms, and each endpoint it names answers with its form.
func TestDiscoverySSHRevocation(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, err := http.Get(ts.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		KRL     string `json:"ssh_krl_endpoint"`
		Revoked string `json:"ssh_revoked_endpoint"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.KRL != ts.Issuer+"/ssh/krl" || doc.Revoked != ts.Issuer+"/ssh/revoked" {
		t.Fatalf("discovery: %+v", doc)
	}
	for url, want := range map[string]string{doc.KRL: "application/octet-stream", doc.Revoked: "application/json"} {
		r, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), want) {
			t.Errorf("%s: %d %s, want 200 %s", url, r.StatusCode, r.Header.Get("Content-Type"), want)
		}
	}
}

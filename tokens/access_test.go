package tokens

import (
	"encoding/json"
	"testing"
)

// TestAccessWire pins the access answer's JSON, which resource servers
// written elsewhere read (DESIGN.md, JSON API).
func TestAccessWire(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Access
		want string
	}{
		{"ok/member", Access{Member: true, Role: "owner", Requirements: Requirements{AMR: []string{"mfa", "sso:acme"}}},
			`{"member":true,"role":"owner","requirements":{"amr":["mfa","sso:acme"],"max_age":null}}`},
		{"ok/member-nothing-required", Access{Member: true, Role: "member", Requirements: Requirements{AMR: []string{}}},
			`{"member":true,"role":"member","requirements":{"amr":[],"max_age":null}}`},
		{"ok/fresh", Access{Member: true, Role: "admin", Requirements: Requirements{AMR: []string{}, MaxAge: seconds(300)}},
			`{"member":true,"role":"admin","requirements":{"amr":[],"max_age":300}}`},
		{"ok/non-member", Access{}, `{"member":false}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.a)
			if err != nil || string(got) != tc.want {
				t.Fatalf("= %s (%v), want %s", got, err, tc.want)
			}
			var back Access
			if err := json.Unmarshal(got, &back); err != nil || back.Member != tc.a.Member || back.Role != tc.a.Role || len(back.Requirements.AMR) != len(tc.a.Requirements.AMR) {
				t.Errorf("round trip: %+v (%v)", back, err)
			}
		})
	}
}

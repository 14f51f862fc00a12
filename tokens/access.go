package tokens

// Access is the server's answer to a resource server asking about one
// person and one organization (GET /api/orgs/{org}/access/{user_id}): the
// server writes it and gateways read it, so both use this type.
//
//	{"member": true, "role": "owner", "requirements": {"amr": ["mfa"], "max_age": null}}
//	{"member": false}
type Access struct {
	Member bool   `json:"member"`
	Role   string `json:"role,omitempty"`
	// Requirements are what the organization demands of every member's
	// authentication; zero, and left out, for a non-member.
	Requirements Requirements `json:"requirements,omitzero"`
}

package authz

import (
	"net/http"
	"net/netip"
	"strings"
)

func (s *Server) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := s.cfg.Issuer
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                 iss,
		"authorization_endpoint": iss + "/oauth2/authorize",
		"token_endpoint":         iss + "/oauth2/token",
		"userinfo_endpoint":      iss + "/oauth2/userinfo",
		"jwks_uri":               iss + "/.well-known/jwks.json",
		"revocation_endpoint":    iss + "/oauth2/revoke",
		"introspection_endpoint": iss + "/oauth2/introspect",
		"end_session_endpoint":   iss + "/oauth2/logout",
		// RFC 8628 §4.
		"device_authorization_endpoint": iss + "/oauth2/device_authorization",
		// Stepup's own endpoints, for clients that discover them.
		"ssh_certificate_endpoint":              iss + "/ssh",
		"ssh_authority_endpoint":                iss + "/ssh/authority",
		"ssh_krl_endpoint":                      iss + "/ssh/krl",
		"ssh_revoked_endpoint":                  iss + "/ssh/revoked",
		"scopes_supported":                      []string{"openid", "offline_access", "profile", "email"},
		"response_types_supported":              []string{"code"},
		"response_modes_supported":              []string{"query"},
		"prompt_values_supported":               []string{"none", "login", "consent", "select_account"},
		"grant_types_supported":                 grantTypes,
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": s.keys.algs,
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "none"},
		"code_challenge_methods_supported":      []string{"S256"},
		"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr",
			"name", "preferred_username", "email", "email_verified"},
		"claims_parameter_supported":                     false,
		"request_parameter_supported":                    false,
		"request_uri_parameter_supported":                false,
		"authorization_response_iss_parameter_supported": true,
		"introspection_endpoint_auth_methods_supported":  []string{"client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":     []string{"client_secret_basic", "client_secret_post", "none"},
	})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	set, err := s.keys.JWKS(r.Context())
	if err != nil {
		if isUnavailable(err) {
			s.unavailable(w, err)
		} else {
			s.internalError(w, err)
		}
		return
	}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSONBody(w, set)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// hostForCSP brackets IPv6 literals as a CSP source needs.
func hostForCSP(host string) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		return "[" + host + "]"
	}
	return host
}

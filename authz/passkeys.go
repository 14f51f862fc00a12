package authz

import "net/http"

// routePasskeys mounts the WebAuthn ceremonies: registering a passkey,
// and using one to sign in.
func (s *Server) routePasskeys(r Router, page, h func(http.HandlerFunc) http.Handler) {}

package authz

import "net/http"

// routeRevocation mounts the SSH certificate revocation list.
func (s *Server) routeRevocation(r Router, h func(http.HandlerFunc) http.Handler) {}

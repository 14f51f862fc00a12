package authz

import "net/http"

// routeServices mounts what clients learn about the services the gateway
// protects.
func (s *Server) routeServices(r Router, h func(http.HandlerFunc) http.Handler) {}

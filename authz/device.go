package authz

import "net/http"

// routeDevice mounts the device authorization grant (RFC 8628): its
// endpoint and the /device page.
func (s *Server) routeDevice(r Router, page, h func(http.HandlerFunc) http.Handler) {}

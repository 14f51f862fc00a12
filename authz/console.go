package authz

import "net/http"

// routeConsole mounts the console's pages: home, navigation, and the
// organization pages people click through.
func (s *Server) routeConsole(r Router, page func(http.HandlerFunc) http.Handler) {}

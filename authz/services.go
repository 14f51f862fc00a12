package authz

import "net/http"

// Service is a resource that the SSH gateway protects, as the config seeds
// it: the organization whose policy applies, and where people's ssh
// reaches the gateway for it.
type Service struct {
	ID, Org string
	// SSHAddress is host:port; empty when the config does not say, and
	// the CLI keeps to its own defaults.
	SSHAddress string
}

// serviceView is GET /api/services/{service}.
type serviceView struct {
	ID         string  `json:"id"`
	Org        string  `json:"org"`
	SSHAddress *string `json:"ssh_address"`
}

// routeServices mounts what clients learn about the services the gateway
// protects.
func (s *Server) routeServices(r Router, h func(http.HandlerFunc) http.Handler) {
	byID := make(map[string]Service, len(s.cfg.Services))
	for _, svc := range s.cfg.Services {
		if _, dup := byID[svc.ID]; !dup {
			byID[svc.ID] = svc
		}
	}
	r.Method(http.MethodGet, "/api/services/{service}", h(func(w http.ResponseWriter, r *http.Request) {
		s.getService(w, r, byID)
	}))
}

// getService tells a member of the service's organization which
// organization that is and where its gateway listens, so that `stepup ssh
// SERVICE` finds it. Anyone else gets the 404 an unknown service gets, as
// the gateway answers them alike. It asks no step-up: the gateway applies
// the organization's policy when the person connects, and says what is
// missing.
func (s *Server) getService(w http.ResponseWriter, r *http.Request, byID map[string]Service) {
	c, ok := s.authenticate(w, r, usePerson)
	if !ok {
		return
	}
	svc, known := byID[r.PathValue("service")]
	if known {
		o, _, err := s.orgOf(r.Context(), svc.Org, c.user.ID)
		if err != nil {
			s.storeOrInternal(w, err)
			return
		}
		known = o != nil
	}
	if !known {
		writeError(w, http.StatusNotFound, "not_found", "There is no service with that id that you can see.")
		return
	}
	v := serviceView{ID: svc.ID, Org: svc.Org}
	if svc.SSHAddress != "" {
		v.SSHAddress = &svc.SSHAddress
	}
	writeJSON(w, http.StatusOK, v)
}

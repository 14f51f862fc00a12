package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/config"
	"github.com/stepup-dev/stepup/internal/gateway"
)

// fileSettings are the keys of the Stepup config file the gateway uses.
type fileSettings struct {
	issuer                 string
	services               map[string]string
	clientID, clientSecret string
	// tokenClients are the server's api.clients.
	tokenClients []string
}

// readConfig reads the gateway's keys from a Stepup config file (the
// server's own file will do) and STEPUP_* variables. The server's other
// keys are parsed, so typos anywhere are still caught, but not validated:
// the gateway has no use for them, and a gateway-only file leaves them out.
func readConfig(path string, env func(string) (string, bool)) (fileSettings, error) {
	c := &config.Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fileSettings{}, fmt.Errorf("config: %w", err)
		}
		if c, err = config.Parse(data, path); err != nil {
			return fileSettings{}, fmt.Errorf("config problems:\n%w", err)
		}
	}
	if err := c.ApplyEnv(env); err != nil {
		return fileSettings{}, fmt.Errorf("config problems:\n%w", err)
	}
	where := path
	if where == "" {
		where = "STEPUP_* variables"
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", where, key, fmt.Sprintf(format, args...)))
	}
	if c.Gateway.ClientID == "" {
		bad("gateway.client_id", "is required: the gateway's client at the server (grant client_credentials, scope access.read)")
	}
	if c.Gateway.ClientSecret == "" {
		bad("gateway.client_secret", "is required")
	}
	if len(c.Services) == 0 {
		bad("services", "lists no service; the gateway would refuse everyone")
	}
	services := map[string]string{}
	for i, s := range c.Services {
		key := fmt.Sprintf("services[%d]", i)
		switch _, dup := services[s.ID]; {
		case s.ID == "":
			bad(key+".id", "is required")
		case dup:
			bad(key+".id", "%q is listed twice", s.ID)
		default:
			if err := gateway.CheckServiceID(s.ID); err != nil {
				bad(key+".id", "%v", err)
			}
		}
		if s.Org == "" {
			bad(key+".org", "is required: the organization whose policy applies")
		}
		services[s.ID] = s.Org
	}
	if err := errors.Join(errs...); err != nil {
		return fileSettings{}, fmt.Errorf("config problems:\n%w", err)
	}
	return fileSettings{issuer: c.Issuer, services: services, clientID: c.Gateway.ClientID, clientSecret: c.Gateway.ClientSecret,
		tokenClients: c.API.Clients}, nil
}

// readHostKey loads an unencrypted OpenSSH private key; "" means none.
func readHostKey(path string) (ssh.Signer, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	key, err := ssh.ParsePrivateKey(data)
	if _, encrypted := errors.AsType[*ssh.PassphraseMissingError](err); encrypted {
		return nil, fmt.Errorf("host key %s is protected by a passphrase; the gateway needs it unencrypted", path)
	}
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	return key, nil
}

// listenHTTP binds addr now, so a bad address stops the start, and
// returns the task that serves GET /healthz and api until its context ends.
func listenHTTP(addr string, api http.Handler) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/", api)
	// WriteTimeout is above the API's own bound on waiting for the Stepup
	// server, so that a slow server still gets the client an answer.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	return func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
		defer stop()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}

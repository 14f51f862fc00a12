package compare

import (
	"net/http"
	"time"

	"github.com/stepup-dev/stepup/internal/load/barefosite"
)

// NewBaselineServer is bare fosite, the comparison's other side, with one
// confidential client, ready to Serve a listener at issuer.
func NewBaselineServer(issuer, clientID, clientSecret string) (*http.Server, error) {
	h, err := barefosite.New(barefosite.Config{Issuer: issuer, ClientID: clientID, ClientSecret: clientSecret})
	if err != nil {
		return nil, err
	}
	// stepupd serve's limits and timeouts, so that the two servers differ
	// in their handlers only.
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}, nil
}

// FositeVersion is the version of fosite built in, as the report and the
// baseline's banner name it.
func FositeVersion() string {
	if v := barefosite.FositeVersion(); v != "" {
		return v
	}
	return "(version unknown)"
}

package verify

import (
	"fmt"

	"github.com/stepup-dev/stepup/tokens"
)

// Reason and Error are package tokens' verification failures: the server
// and resource servers check tokens with one JWS check and speak one set
// of reasons. The names stay here so that resource servers need import
// only this package.
type (
	Reason = tokens.Reason
	Error  = tokens.Error
)

// Reasons Verify fails.
const (
	Malformed       = tokens.Malformed
	WrongType       = tokens.WrongType
	BadSignature    = tokens.BadSignature
	UnknownKey      = tokens.UnknownKey
	Expired         = tokens.Expired
	NotYetValid     = tokens.NotYetValid
	WrongIssuer     = tokens.WrongIssuer
	WrongAudience   = tokens.WrongAudience
	WrongClient     = tokens.WrongClient
	KeysUnavailable = tokens.KeysUnavailable
)

func fail(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

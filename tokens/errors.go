package tokens

import (
	"errors"
	"fmt"
)

// Reason is why a token was refused. Callers branch on it (an HTTP status,
// a log field) rather than on the text of the error, and errors.Is(err,
// reason) tells whether a verification failed for it.
//
// There is one set for every JWS check: the server's own (KeySet.Verify,
// and the verified-token path of its API) and the resource servers'
// (package verify).
type Reason int

// Reasons a token is refused.
const (
	// Malformed: not a compact JWS, unreadable claims, or a required claim
	// (sub, exp, iat) missing.
	Malformed Reason = iota + 1
	// WrongType: the header typ is not at+jwt, so the token is not an
	// access token (an ID token, for instance) whatever it says.
	WrongType
	// BadSignature: the signature does not verify, or the header alg is
	// not the one the key was published for (none and HS* never are).
	BadSignature
	// UnknownKey: no kid, or a kid the issuer does not publish.
	UnknownKey
	Expired
	// NotYetValid: iat or nbf later than now plus the leeway.
	NotYetValid
	WrongIssuer
	WrongAudience
	// WrongClient: the token was issued to a client the verifier does not
	// serve (a third-party relying party's token at a first-party API).
	WrongClient
	// KeysUnavailable: the issuer's keys could not be fetched. The token
	// may be fine; asking again later may succeed.
	KeysUnavailable
)

var reasonNames = [...]string{
	Malformed:       "malformed token",
	WrongType:       "not an access token",
	BadSignature:    "bad signature",
	UnknownKey:      "unknown signing key",
	Expired:         "token expired",
	NotYetValid:     "token not yet valid",
	WrongIssuer:     "wrong issuer",
	WrongAudience:   "wrong audience",
	WrongClient:     "wrong client",
	KeysUnavailable: "signing keys unavailable",
}

func (r Reason) String() string {
	if r > 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Error makes a Reason usable as errors.Is's target.
func (r Reason) Error() string { return "tokens: " + r.String() }

// Description is the error_description a client is shown. It is fixed per
// reason: the details in Error.Err (URLs, times, kids) are for our logs,
// and RFC 6750 limits the header's characters anyway.
func (r Reason) Description() string {
	switch r {
	case Malformed:
		return "The access token is malformed"
	case WrongType:
		return "The token is not an access token"
	case BadSignature:
		return "The access token signature is invalid"
	case UnknownKey:
		return "The access token is signed by an unknown key"
	case Expired:
		return "The access token expired"
	case NotYetValid:
		return "The access token is not yet valid"
	case WrongIssuer:
		return "The access token is from another issuer"
	case WrongAudience:
		return "The access token is not meant for this service"
	case WrongClient:
		return "The access token was issued to a client this service does not serve"
	case KeysUnavailable:
		return "The issuer's signing keys are unavailable; try again shortly"
	}
	return "The access token is invalid"
}

// Error is a verification failure.
type Error struct {
	Reason Reason
	// Err is the detail, for logs.
	Err error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "tokens: " + e.Reason.String()
	}
	return "tokens: " + e.Reason.String() + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the error's Reason, so errors.Is(err, tokens.Expired) works
// through any wrapping.
func (e *Error) Is(target error) bool {
	r, ok := target.(Reason)
	return ok && r == e.Reason
}

// ReasonOf is the Reason of err, or 0 when err is not a verification
// failure (nil included).
func ReasonOf(err error) Reason {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Reason
	}
	return 0
}

// Package mfa holds the second-factor primitives: TOTP enrollment and
// verification, recovery codes and the throttling policy for wrong codes.
//
// Everything here is pure: time comes in as an argument and nothing is
// stored. Making a TOTP step or a recovery code single-use, and counting
// failures, is the store's job, because only the store can do it atomically
// across replicas.
package mfa

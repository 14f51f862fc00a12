package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/stepup-dev/stepup/tokens"
)

// maxJWKS bounds the key set we read; it holds a handful of keys.
const maxJWKS = 1 << 20

// minRSABits is RFC 7518 section 3.3's floor for RS256 keys.
const minRSABits = 2048

type fetchCall struct {
	done chan struct{}
	err  error // set before done is closed
}

// key returns the published key for kid, fetching the JWKS first when the
// cache has never been filled or does not know kid. A stale cache that
// knows kid is used as it is while a refresh runs behind it.
func (v *Verifier) key(ctx context.Context, kid, alg string, now time.Time) (*jose.JSONWebKey, error) {
	v.mu.Lock()
	k := lookup(v.keys, kid, alg)
	stale := v.fetched.IsZero() || now.Sub(v.fetched) >= v.cfg.RefreshInterval
	if k != nil && !stale {
		v.mu.Unlock()
		return k, nil
	}
	call := v.startFetchLocked(now)
	lastErr := v.lastErr
	v.mu.Unlock()
	if k != nil {
		return k, nil
	}
	if call == nil {
		// Paced: answer from what the last fetch left us.
		if lastErr != nil {
			return nil, &Error{Reason: KeysUnavailable, Err: lastErr}
		}
		return nil, fail(UnknownKey, "kid %q is not in the issuer's JWKS", kid)
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, &Error{Reason: KeysUnavailable, Err: fmt.Errorf("waiting for the JWKS: %w", ctx.Err())}
	}
	if call.err != nil {
		return nil, &Error{Reason: KeysUnavailable, Err: call.err}
	}
	v.mu.Lock()
	k = lookup(v.keys, kid, alg)
	v.mu.Unlock()
	if k == nil {
		return nil, fail(UnknownKey, "kid %q is not in the issuer's JWKS", kid)
	}
	return k, nil
}

// startFetchLocked returns the fetch under way, or starts one unless the
// last one began less than MinRefetch ago; nil when paced.
func (v *Verifier) startFetchLocked(now time.Time) *fetchCall {
	if v.inflight != nil {
		return v.inflight
	}
	if !v.lastTry.IsZero() && now.Sub(v.lastTry) < v.cfg.MinRefetch {
		return nil
	}
	call := &fetchCall{done: make(chan struct{})}
	v.inflight, v.lastTry = call, now
	// The fetch has a context of its own: the request that set it off may
	// be cancelled, but others may be waiting for the result.
	go v.fetch(call)
	return call
}

func (v *Verifier) fetch(call *fetchCall) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	keys, err := v.download(ctx)
	v.mu.Lock()
	if err == nil {
		// On error the old keys stay: an issuer that is briefly
		// unreachable should not lock out every token it has issued.
		v.keys, v.fetched = keys, v.cfg.Now()
	}
	v.lastErr = err
	v.inflight = nil
	v.mu.Unlock()
	call.err = err
	close(call.done)
}

func (v *Verifier) download(ctx context.Context) (jose.JSONWebKeySet, error) {
	u := v.cfg.JWKSURL
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return jose.JSONWebKeySet{}, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	// Keys are read one by one: go-jose refuses a whole set for one key
	// it cannot parse, and a key type added to the issuer later must not
	// cost us the keys we can use.
	var body struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKS)).Decode(&body); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("GET %s: not a JWKS: %w", u, err)
	}
	var set jose.JSONWebKeySet
	for _, raw := range body.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if pub, ok := usable(k); ok {
			set.Keys = append(set.Keys, pub)
		}
	}
	if len(set.Keys) == 0 && len(body.Keys) > 0 {
		return jose.JSONWebKeySet{}, fmt.Errorf("GET %s: none of the %d keys is a signing key for %v", u, len(body.Keys), tokens.Algorithms)
	}
	return set, nil
}

// usable returns the public part of k if it can verify tokens: a signing
// key with a kid, published for one of our algorithms, of the type and
// size that alg needs. Checking here keeps Verify's path to a string
// comparison.
func usable(k jose.JSONWebKey) (jose.JSONWebKey, bool) {
	if k.KeyID == "" || (k.Use != "" && k.Use != "sig") {
		return jose.JSONWebKey{}, false
	}
	// A private key published by mistake still verifies by its public
	// half; we keep no more than that.
	pub := k.Public()
	if !pub.Valid() {
		return jose.JSONWebKey{}, false
	}
	ok := false
	switch pub.Algorithm {
	case tokens.ES256:
		key, isEC := pub.Key.(*ecdsa.PublicKey)
		ok = isEC && key.Curve == elliptic.P256()
	case tokens.RS256:
		key, isRSA := pub.Key.(*rsa.PublicKey)
		ok = isRSA && key.N.BitLen() >= minRSABits
	case tokens.EdDSA:
		_, ok = pub.Key.(ed25519.PublicKey)
	}
	return pub, ok
}

// lookup finds kid among keys, preferring one published for alg. A key
// under kid for another alg is still returned, for Verify to refuse as a
// bad signature rather than an unknown key.
func lookup(keys jose.JSONWebKeySet, kid, alg string) *jose.JSONWebKey {
	var other *jose.JSONWebKey
	for i := range keys.Keys {
		k := &keys.Keys[i]
		if k.KeyID != kid {
			continue
		}
		if k.Algorithm == alg {
			return k
		}
		if other == nil {
			other = k
		}
	}
	return other
}

package load

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// Baseline is the raw cryptographic cost of one operation of a scenario:
// the signatures, verifications and password hash the server cannot avoid
// for it, measured in this process, one at a time on one core, with the
// libraries and parameters the server uses (go-jose, argon2id as
// authz.HashPassword makes it, an Ed25519 CA's ssh SignCert). It leaves out
// everything else: TLS, HTTP, JSON, HMACs, SHA-256 and the store.
type Baseline struct {
	// What the operation needs, e.g. "argon2id + ES256 sign + RS256 sign".
	What string
	Cost time.Duration
}

// RawCost is scenario's Baseline as Run reports it for a server whose
// tokens it has not seen: its access tokens signed with the server's
// default, ES256, and no ID token. It lets a caller that drives the load by
// other means (stepupd compare's wrk) put the same raw cost beside it.
func RawCost(scenario string) Baseline {
	srs := []ScenarioReport{{Name: scenario}}
	(&runner{}).baselines(srs)
	return srs[0].Baseline
}

// tokenAlgs are the signing algorithms seen in the server's tokens: access
// tokens', and the public client's ID tokens'.
type tokenAlgs struct{ access, id string }

var jwsAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

func jwtAlg(token string) string {
	jws, err := jose.ParseSigned(token, jwsAlgs)
	if err != nil || len(jws.Signatures) == 0 {
		return ""
	}
	return jws.Signatures[0].Protected.Algorithm
}

// sawTokens notes the algorithms of a token response's JWTs. Each is
// parsed until its algorithm is known: a client_credentials response has
// no ID token, and parsing every access token would load the bench, which
// shares the server's cores.
func (r *runner) sawTokens(tok *oauth2.Token) {
	idToken, _ := tok.Extra("id_token").(string)
	r.algsMu.Lock()
	needAccess, needID := r.algs.access == "", r.algs.id == "" && idToken != ""
	r.algsMu.Unlock()
	var access, id string
	if needAccess {
		access = jwtAlg(tok.AccessToken)
	}
	if needID {
		id = jwtAlg(idToken)
	}
	if access == "" && id == "" {
		return
	}
	r.algsMu.Lock()
	defer r.algsMu.Unlock()
	if r.algs.access == "" {
		r.algs.access = access
	}
	if r.algs.id == "" {
		r.algs.id = id
	}
}

// baselines fills in each scenario's Baseline, measuring each primitive
// once.
func (r *runner) baselines(srs []ScenarioReport) {
	r.algsMu.Lock()
	algs := r.algs
	r.algsMu.Unlock()
	if algs.access == "" {
		algs.access = string(jose.ES256) // the server's default
	}
	cost := map[string]time.Duration{}
	part := func(name string, f func() (func(), error)) (string, time.Duration) {
		if c, ok := cost[name]; ok {
			return name, c
		}
		op, err := f()
		if err != nil {
			return name + " (not measured: " + err.Error() + ")", 0
		}
		cost[name] = measure(op)
		return name, cost[name]
	}
	sign := func(alg string) func() (string, time.Duration) {
		return func() (string, time.Duration) {
			return part(alg+" sign", func() (func(), error) { return jwsSign(alg) })
		}
	}
	verify := func(alg string) func() (string, time.Duration) {
		return func() (string, time.Duration) {
			return part(alg+" verify", func() (func(), error) { return jwsVerify(alg) })
		}
	}
	argon := func() (string, time.Duration) { return part("argon2id", passwordCheck) }
	sshCert := func() (string, time.Duration) { return part("Ed25519 SignCert", signCert) }
	issue := []func() (string, time.Duration){sign(algs.access)}
	if algs.id != "" {
		issue = append(issue, sign(algs.id))
	}
	for i := range srs {
		var parts []func() (string, time.Duration)
		switch srs[i].Name {
		case ClientCredentials:
			parts = issue[:1]
		case Refresh:
			parts = issue
		case Login:
			parts = append([]func() (string, time.Duration){argon}, issue...)
		case SSH:
			parts = []func() (string, time.Duration){verify(algs.access), sshCert}
		case Introspect, Members:
			parts = []func() (string, time.Duration){verify(algs.access)}
		}
		var names []string
		var total time.Duration
		for _, p := range parts {
			n, c := p()
			names, total = append(names, n), total+c
		}
		srs[i].Baseline = Baseline{What: strings.Join(names, " + "), Cost: total}
	}
}

// measure is the median time of op, run alone at least five times and
// for about 200ms after one warm-up call.
func measure(op func()) time.Duration {
	op()
	var times []time.Duration
	start := time.Now()
	for len(times) < 5 || time.Since(start) < 200*time.Millisecond {
		t := time.Now()
		op()
		times = append(times, time.Since(t))
	}
	slices.Sort(times)
	return times[len(times)/2]
}

// accessClaims is an access token's payload of a typical size.
var accessClaims = []byte(`{"iss":"http://127.0.0.1:8080","sub":"u_alice","aud":["http://127.0.0.1:8080"],"exp":1900000000,` +
	`"iat":1899996400,"jti":"0f8c2a4e-6a43-4c4b-9d1e-2b7f0c1d9e8a.Zm9vYmFyYmF6cXV4","client_id":"stepup-cli",` +
	`"scp":["openid","offline_access"],"amr":["pwd"],"auth_time":1899996400,"grant":"authorization_code"}`)

func signingKey(alg string) (crypto.Signer, error) {
	switch jose.SignatureAlgorithm(alg) {
	case jose.ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.ES512:
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		return rsa.GenerateKey(rand.Reader, 2048)
	case jose.EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown algorithm %q", alg)
}

func jwsSigner(alg string) (jose.Signer, crypto.Signer, error) {
	key, err := signingKey(alg)
	if err != nil {
		return nil, nil, err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "baseline"))
	return s, key, err
}

func jwsSign(alg string) (func(), error) {
	s, _, err := jwsSigner(alg)
	if err != nil {
		return nil, err
	}
	return func() {
		obj, err := s.Sign(accessClaims)
		if err == nil {
			_, err = obj.CompactSerialize()
		}
		if err != nil {
			panic(err)
		}
	}, nil
}

func jwsVerify(alg string) (func(), error) {
	s, key, err := jwsSigner(alg)
	if err != nil {
		return nil, err
	}
	obj, err := s.Sign(accessClaims)
	if err != nil {
		return nil, err
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		return nil, err
	}
	return func() {
		jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		if err == nil {
			_, err = jws.Verify(key.Public())
		}
		if err != nil {
			panic(err)
		}
	}, nil
}

// passwordCheck is one argon2id comparison with the server's parameters.
func passwordCheck() (func(), error) {
	hash, err := authz.HashPassword("correct horse battery staple")
	if err != nil {
		return nil, err
	}
	return func() {
		if !authz.CheckPassword(hash, "correct horse battery staple") {
			panic("argon2id baseline: the password does not match its own hash")
		}
	}, nil
}

// signCert is one OpenSSH user certificate signed by an Ed25519 CA.
func signCert() (func(), error) {
	_, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ca, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		return nil, err
	}
	userPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	user, err := ssh.NewPublicKey(userPub)
	if err != nil {
		return nil, err
	}
	return func() {
		now := time.Now()
		cert := &ssh.Certificate{Key: user, CertType: ssh.UserCert, KeyId: "u_alice", ValidPrincipals: []string{"alice"},
			ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
			Permissions: ssh.Permissions{Extensions: map[string]string{
				"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "",
				"token-claims@127.0.0.1": `{"amr":["pwd"],"auth_time":1899996400,"grant":"authorization_code","scp":["openid"]}`,
				"token-id@127.0.0.1":     "0f8c2a4e-6a43-4c4b-9d1e-2b7f0c1d9e8a.Zm9vYmFyYmF6cXV4",
			}}}
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			panic(err)
		}
	}, nil
}

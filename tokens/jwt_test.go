package tokens

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func mustSign(t testing.TB, ks *KeySet, alg string, payload []byte, typ string) string {
	t.Helper()
	s, err := ks.Signer(alg)
	if err != nil {
		t.Fatalf("Signer(%s): %v", alg, err)
	}
	tok, err := s.Sign(payload, typ)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

func decodeHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// withHeader replaces a token's protected header and keeps its payload and
// signature, as an attacker relabelling a token would.
func withHeader(t *testing.T, token string, header map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	parts[0] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// hs256 signs header and payload with HMAC, the classic confusion where a
// verifier is tricked into using a public key as an HMAC secret.
func hs256(t *testing.T, header map[string]any, payload, secret []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func TestSignVerifyRoundTrip(t *testing.T) {
	ks := newSet(t, allAlgs...)
	payload := []byte(`{"iss":"http://127.0.0.1:8080","sub":"u_alice","amr":["pwd","otp","mfa"]}`)
	for _, alg := range allAlgs {
		for _, typ := range []string{TypAccessToken, TypIDToken, "", "logout+jwt"} {
			t.Run("ok/"+alg+"/"+typ, func(t *testing.T) {
				s, err := ks.Signer(alg)
				if err != nil {
					t.Fatal(err)
				}
				if s.Algorithm() != alg {
					t.Errorf("Algorithm() = %q, want %q", s.Algorithm(), alg)
				}
				tok, err := s.Sign(payload, typ)
				if err != nil {
					t.Fatal(err)
				}

				want := map[string]any{"alg": alg, "kid": s.KeyID()}
				if typ != "" {
					want["typ"] = typ
				}
				h := decodeHeader(t, tok)
				if len(h) != len(want) {
					t.Errorf("header = %v, want %v", h, want)
				}
				for k, v := range want {
					if h[k] != v {
						t.Errorf("header %s = %v, want %v", k, h[k], v)
					}
				}

				got, gotTyp, err := ks.Verify(tok, t0)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if string(got) != string(payload) {
					t.Errorf("payload = %s, want %s", got, payload)
				}
				if gotTyp != typ {
					t.Errorf("typ = %q, want %q", gotTyp, typ)
				}
			})
		}
	}
}

type countingClaims struct {
	Sub   string
	calls *int
}

func (c countingClaims) MarshalJSON() ([]byte, error) {
	*c.calls++
	return json.Marshal(map[string]string{"sub": c.Sub})
}

func TestSignJSONMarshalsOnce(t *testing.T) {
	ks := newSet(t, ES256)
	s, err := ks.Signer(ES256)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	tok, err := s.SignJSON(countingClaims{Sub: "u_alice", calls: &calls}, TypAccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("claims marshalled %d times, want 1", calls)
	}
	payload, _, err := ks.Verify(tok, t0)
	if err != nil {
		t.Fatal(err)
	}
	if string(payload) != `{"sub":"u_alice"}` {
		t.Errorf("payload = %s", payload)
	}
	if _, err := s.SignJSON(func() {}, ""); err == nil {
		t.Error("SignJSON of a func succeeded")
	}
}

func TestVerifyRefuses(t *testing.T) {
	ks := newSet(t, ES256, RS256, EdDSA)
	other := newSet(t, ES256)
	payload := []byte(`{"sub":"u_alice","scp":["openid"]}`)
	es := mustSign(t, ks, ES256, payload, TypAccessToken)
	esKID := ks.Current[0].KeyID
	esPub, _ := ks.VerificationKey(esKID, t0)
	esPubJSON, err := json.Marshal(esPub)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(es, ".")

	tamperedPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u_admin","scp":["openid"]}`)) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"fail/tampered-payload", tamperedPayload, BadSignature},
		{"fail/tampered-signature", tamperedSig, BadSignature},
		{"fail/unknown-kid", withHeader(t, es, map[string]any{"alg": ES256, "kid": "nope", "typ": TypAccessToken}), UnknownKey},
		{"fail/no-kid", withHeader(t, es, map[string]any{"alg": ES256, "typ": TypAccessToken}), UnknownKey},
		{"fail/other-key-set", mustSign(t, other, ES256, payload, TypAccessToken), UnknownKey},
		// The header alg is one the set supports, but not this key's.
		{"fail/alg-swapped-to-rs256", withHeader(t, es, map[string]any{"alg": RS256, "kid": esKID, "typ": TypAccessToken}), BadSignature},
		{"fail/alg-swapped-to-eddsa", withHeader(t, es, map[string]any{"alg": EdDSA, "kid": esKID}), BadSignature},
		{"fail/alg-none", withHeader(t, parts[0]+"."+parts[1]+".", map[string]any{"alg": "none", "kid": esKID}), BadSignature},
		{"fail/alg-hs256-public-key-as-secret", hs256(t, map[string]any{"alg": "HS256", "kid": esKID}, payload, esPubJSON), BadSignature},
		{"fail/es384", withHeader(t, es, map[string]any{"alg": "ES384", "kid": esKID}), BadSignature},
		{"fail/empty", "", Malformed},
		{"fail/one-part", "abc", Malformed},
		{"fail/four-parts", es + ".x", Malformed},
		{"fail/bad-base64", "!!." + parts[1] + "." + parts[2], Malformed},
		{"fail/json-serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, Malformed},
		{"fail/typ-not-string", withHeader(t, es, map[string]any{"alg": ES256, "kid": esKID, "typ": 7}), Malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, _, err := ks.Verify(tt.token, t0)
			t.Log(err)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %s, %v; want %v", payload, err, tt.want)
			}
			if payload != nil {
				t.Errorf("payload %s returned with an error", payload)
			}
		})
	}

	// The untouched token still verifies, so the failures above are the
	// changes' doing.
	if _, _, err := ks.Verify(es, t0); err != nil {
		t.Fatalf("original token: %v", err)
	}
}

func TestVerifyAcrossRotation(t *testing.T) {
	ks := newSet(t, ES256, EdDSA)
	issuedAt := t0.Add(rotateEvery - time.Minute)
	old := map[string]string{}
	for _, alg := range ks.Algorithms() {
		old[alg] = mustSign(t, ks, alg, []byte(`{"sub":"u_alice"}`), TypAccessToken)
	}

	rotatedAt := t0.Add(rotateEvery)
	if err := ks.Rotate(rotatedAt, rotateEvery, retain); err != nil {
		t.Fatal(err)
	}
	fresh := mustSign(t, ks, ES256, []byte(`{"sub":"u_bob"}`), TypIDToken)

	for alg, tok := range old {
		if _, typ, err := ks.Verify(tok, issuedAt); err != nil || typ != TypAccessToken {
			t.Errorf("%s: old token at issuance: typ %q, %v", alg, typ, err)
		}
		if _, _, err := ks.Verify(tok, rotatedAt.Add(retain-time.Second)); err != nil {
			t.Errorf("%s: old token just before retain passes: %v", alg, err)
		}
		if _, _, err := ks.Verify(tok, rotatedAt.Add(retain)); !errors.Is(err, UnknownKey) {
			t.Errorf("%s: old token once retain has passed: %v, want UnknownKey", alg, err)
		}
	}
	if _, typ, err := ks.Verify(fresh, rotatedAt.Add(retain+time.Hour)); err != nil || typ != TypIDToken {
		t.Errorf("token from the new key: typ %q, %v", typ, err)
	}
}

func TestSignConcurrent(t *testing.T) {
	ks := newSet(t, EdDSA)
	s, err := ks.Signer(EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	typs := []string{TypAccessToken, TypIDToken, "", "logout+jwt", "a+jwt", "b+jwt"}
	var wg sync.WaitGroup
	for i := range 32 {
		typ := typs[i%len(typs)]
		wg.Go(func() {
			tok, err := s.Sign([]byte(`{}`), typ)
			if err != nil {
				t.Error(err)
				return
			}
			if _, got, err := ks.Verify(tok, t0); err != nil || got != typ {
				t.Errorf("typ %q: got %q, %v", typ, got, err)
			}
		})
	}
	wg.Wait()
}

// benchClaims is shaped like an access token (DESIGN.md).
type benchClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
	ID       string   `json:"jti"`
	ClientID string   `json:"client_id"`
	Scope    []string `json:"scp"`
	AMR      []string `json:"amr"`
	AuthTime int64    `json:"auth_time"`
	Grant    string   `json:"grant"`
}

// BenchmarkSignES256 puts a whole access-token signature next to the bare
// ECDSA operation in one run, so the JWS overhead reads as their ratio.
func BenchmarkSignES256(b *testing.B) {
	ks := newSet(b, ES256)
	s, err := ks.Signer(ES256)
	if err != nil {
		b.Fatal(err)
	}
	claims := benchClaims{
		Issuer:   "http://127.0.0.1:8080",
		Subject:  "u_alice",
		Audience: []string{"https://api.example.com"},
		Expiry:   t0.Add(time.Hour).Unix(),
		IssuedAt: t0.Unix(),
		ID:       "b7c9d3f0-4f8e-4a1e-9d53-2f6a8c1e7b40",
		ClientID: "stepup-cli",
		Scope:    []string{"openid", "offline_access", "profile", "email"},
		AMR:      []string{"pwd", "otp", "mfa", "sso:acme"},
		AuthTime: t0.Unix(),
		Grant:    "authorization_code",
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		b.Fatal(err)
	}
	priv := ks.Current[0].Key.(*ecdsa.PrivateKey)
	digest := sha256.Sum256(payload)

	b.Run("sub/jws", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.SignJSON(claims, TypAccessToken); err != nil {
				b.Fatal(err)
			}
		}
	})
	// go-jose's signer, with the same key, header and claims: what Signer
	// did before it wrote the JWS itself.
	b.Run("sub/go-jose", func(b *testing.B) {
		js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv},
			(&jose.SignerOptions{}).WithHeader("kid", s.KeyID()).WithType(TypAccessToken))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			p, err := json.Marshal(claims)
			if err != nil {
				b.Fatal(err)
			}
			obj, err := js.Sign(p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := obj.CompactSerialize(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sub/raw-ecdsa", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, priv, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSignLikeJose: a token is what go-jose makes of the same key, header
// and payload: the same header bytes and payload, and a signature go-jose
// itself accepts (ES256 and RS256 signatures are randomized or not, so
// the bytes are compared only where they are deterministic: RS256, EdDSA).
func TestSignLikeJose(t *testing.T) {
	ks := newSet(t, allAlgs...)
	payload := []byte(`{"sub":"u_alice","amr":["pwd"]}`)
	for _, k := range ks.Current {
		for _, typ := range []string{TypAccessToken, ""} {
			opts := (&jose.SignerOptions{}).WithHeader("kid", k.KeyID)
			if typ != "" {
				opts = opts.WithType(jose.ContentType(typ))
			}
			js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k.Key}, opts)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := js.Sign(payload)
			if err != nil {
				t.Fatal(err)
			}
			theirs, _ := obj.CompactSerialize()
			s, err := ks.Signer(k.Algorithm)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := s.Sign(payload, typ)
			if err != nil {
				t.Fatal(err)
			}
			o, th := strings.Split(ours, "."), strings.Split(theirs, ".")
			if len(o) != 3 || o[0] != th[0] || o[1] != th[1] {
				t.Errorf("%s %q: ours %s, go-jose's %s", k.Algorithm, typ, ours, theirs)
			}
			if k.Algorithm != ES256 && o[2] != th[2] {
				t.Errorf("%s %q: signature %s, go-jose's %s", k.Algorithm, typ, o[2], th[2])
			}
			parsed, err := jose.ParseSignedCompact(ours, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(k.Algorithm)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parsed.Verify(k.Public().Key); err != nil {
				t.Errorf("%s %q: go-jose refuses our signature: %v", k.Algorithm, typ, err)
			}
		}
	}
}

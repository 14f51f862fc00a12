package authz_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/oauth2"

	"github.com/stepup-dev/stepup/authz"
)

// The passkey ceremonies over plain HTTP, as console.js drives them, with
// a software authenticator: an ECDSA P-256 key per credential that
// answers registrations with "none" attestation and signs assertions. The
// issuer is "localhost": WebAuthn refuses IP addresses as relying-party
// ids.

// Authenticator data flags (WebAuthn §6.1).
const (
	pkFlagUP = 0x01
	pkFlagUV = 0x04
	pkFlagAT = 0x40
)

var pkB64 = base64.RawURLEncoding

// pkKey is one credential of the software authenticator.
type pkKey struct {
	id   []byte
	priv *ecdsa.PrivateKey
	// attachment is what the browser reports: "platform" or
	// "cross-platform".
	attachment string
	// userHandle is the user.id of the registration's options.
	userHandle []byte
	// count is the last signature counter it used.
	count uint32
}

func newPKKey(t *testing.T, attachment string) *pkKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 32)
	rand.Read(id)
	return &pkKey{id: id, priv: priv, attachment: attachment}
}

// pkBegun is the answer of an options endpoint.
type pkBegun struct {
	Ceremony string `json:"ceremony"`
	Options  struct {
		Challenge string `json:"challenge"`
		RPID      string `json:"rpId"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		AllowCredentials []struct {
			ID string `json:"id"`
		} `json:"allowCredentials"`
		ExcludeCredentials []struct {
			ID string `json:"id"`
		} `json:"excludeCredentials"`
		UserVerification string `json:"userVerification"`
	} `json:"options"`
}

// pkClientData is the browser's clientDataJSON.
func pkClientData(t *testing.T, typ, challenge, origin string) []byte {
	t.Helper()
	data, err := json.Marshal(struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}{typ, challenge, origin, false})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func pkRPHash(rpID string) []byte { h := sha256.Sum256([]byte(rpID)); return h[:] }

// create answers a registration's options with "none" attestation.
func (k *pkKey) create(t *testing.T, begun pkBegun, origin string, flags byte) map[string]any {
	t.Helper()
	handle, err := pkB64.DecodeString(begun.Options.User.ID)
	if err != nil {
		t.Fatalf("user.id %q: %v", begun.Options.User.ID, err)
	}
	k.userHandle = handle
	enc, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	x, y := make([]byte, 32), make([]byte, 32)
	k.priv.X.FillBytes(x)
	k.priv.Y.FillBytes(y)
	cose, err := enc.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
	if err != nil {
		t.Fatal(err)
	}
	var auth bytes.Buffer
	auth.Write(pkRPHash(begun.Options.RP.ID))
	auth.WriteByte(flags | pkFlagAT)
	binary.Write(&auth, binary.BigEndian, k.count)
	auth.Write(make([]byte, 16)) // aaguid
	binary.Write(&auth, binary.BigEndian, uint16(len(k.id)))
	auth.Write(k.id)
	auth.Write(cose)
	att, err := enc.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": auth.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	transport := "internal"
	if k.attachment == "cross-platform" {
		transport = "usb"
	}
	return map[string]any{
		"id": pkB64.EncodeToString(k.id), "rawId": pkB64.EncodeToString(k.id), "type": "public-key",
		"authenticatorAttachment": k.attachment, "clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    pkB64.EncodeToString(pkClientData(t, "webauthn.create", begun.Options.Challenge, origin)),
			"attestationObject": pkB64.EncodeToString(att),
			"transports":        []string{transport},
		},
	}
}

// pkUse is how an assertion is made: the zero value is an honest one,
// with user presence only, the next counter and no user handle.
type pkUse struct {
	flags      byte   // pkFlagUP when zero
	count      uint32 // k.count+1 when zero
	origin     string // the issuer's when empty
	challenge  string // the options' when empty
	userHandle bool
}

// get answers a sign-in's options.
func (k *pkKey) get(t *testing.T, begun pkBegun, origin string, use pkUse) map[string]any {
	t.Helper()
	if use.flags == 0 {
		use.flags = pkFlagUP
	}
	if use.count == 0 {
		use.count = k.count + 1
	}
	k.count = use.count
	if use.origin == "" {
		use.origin = origin
	}
	if use.challenge == "" {
		use.challenge = begun.Options.Challenge
	}
	var auth bytes.Buffer
	auth.Write(pkRPHash(begun.Options.RPID))
	auth.WriteByte(use.flags)
	binary.Write(&auth, binary.BigEndian, use.count)
	clientData := pkClientData(t, "webauthn.get", use.challenge, use.origin)
	cdh := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(auth.Bytes(), cdh[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	resp := map[string]any{
		"clientDataJSON":    pkB64.EncodeToString(clientData),
		"authenticatorData": pkB64.EncodeToString(auth.Bytes()),
		"signature":         pkB64.EncodeToString(sig),
	}
	if use.userHandle {
		resp["userHandle"] = pkB64.EncodeToString(k.userHandle)
	}
	return map[string]any{
		"id": pkB64.EncodeToString(k.id), "rawId": pkB64.EncodeToString(k.id), "type": "public-key",
		"authenticatorAttachment": k.attachment, "clientExtensionResults": map[string]any{},
		"response": resp,
	}
}

// pkLog is the server's log, in JSON lines.
type pkLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *pkLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *pkLog) mark() int { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.Len() }

// since is the records logged after mark.
func (l *pkLog) since(t *testing.T, mark int) []map[string]any {
	t.Helper()
	l.mu.Lock()
	data := slices.Clone(l.buf.Bytes()[mark:])
	l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(string(data)) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// pkFixture is a server on "localhost", its log, and alice's passkey.
type pkFixture struct {
	ts     *testServer
	log    *pkLog
	origin string
	alice  *pkKey
}

func newPKFixture(t *testing.T) *pkFixture {
	t.Helper()
	f := &pkFixture{log: &pkLog{}}
	f.ts = newTestServer(t, func(c *authz.Config) {
		c.Issuer = strings.Replace(c.Issuer, "127.0.0.1", "localhost", 1)
		c.Logger = slog.New(slog.NewJSONHandler(f.log, nil))
	})
	f.ts.Issuer = strings.Replace(f.ts.Issuer, "127.0.0.1", "localhost", 1)
	f.origin = f.ts.Issuer
	f.alice = newPKKey(t, "platform")
	f.register(t, "alice", f.alice, pkFlagUP|pkFlagUV, "swk")
	return f
}

// register adds key to username's account from My profile → Security,
// and checks the amr value it earned.
func (f *pkFixture) register(t *testing.T, username string, key *pkKey, flags byte, method string) {
	t.Helper()
	reg := f.beginRegistration(t, username)
	status, raw := reg.post(t, key.create(t, reg.begun, f.origin, flags))
	if status != http.StatusCreated {
		t.Fatalf("registering %s's passkey: %d %s", username, status, raw)
	}
	if got := pkJSON(t, raw); got["method"] != method || got["id"] != pkB64.EncodeToString(key.id) {
		t.Fatalf("registered %v, want method %s and id %s", got, method, pkB64.EncodeToString(key.id))
	}
}

// pkRegistering is a registration begun on My profile → Security.
type pkRegistering struct {
	b     *browser
	csrf  string
	begun pkBegun
}

// beginRegistration signs username in, in a new browser, and asks for a
// registration's options.
func (f *pkFixture) beginRegistration(t *testing.T, username string) pkRegistering {
	t.Helper()
	b, _ := loginAs(t, f.ts, username)
	return f.beginRegistrationIn(t, b)
}

func (f *pkFixture) beginRegistrationIn(t *testing.T, b *browser) pkRegistering {
	t.Helper()
	p := b.get(f.ts.Issuer + "/account/security")
	if p.StatusCode != http.StatusOK || !strings.Contains(p.Body, "data-passkey-add") {
		t.Fatalf("the security page (%d) offers no passkey: %s", p.StatusCode, p.Body)
	}
	reg := pkRegistering{b: b, csrf: formValues(p).Get("csrf_token")}
	status, raw := pkPost(t, b, "/account/security/passkeys/options", reg.csrf, map[string]any{})
	if status != http.StatusOK {
		t.Fatalf("registration options: %d %s", status, raw)
	}
	reg.begun = pkBegunOf(t, raw)
	if reg.begun.Options.RP.ID != "localhost" {
		t.Fatalf("rp.id %q, want localhost", reg.begun.Options.RP.ID)
	}
	return reg
}

func (r pkRegistering) post(t *testing.T, cred map[string]any) (int, []byte) {
	t.Helper()
	return pkPost(t, r.b, "/account/security/passkeys", r.csrf, map[string]any{"ceremony": r.begun.Ceremony, "name": "My key", "credential": cred})
}

// pkPost sends one of the script's JSON requests from b.
func pkPost(t *testing.T, b *browser, path, csrf string, body any) (int, []byte) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return pkPostRaw(t, b, path, csrf, data)
}

func pkPostRaw(t *testing.T, b *browser, path, csrf string, data []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.issuer+path, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func pkJSON(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("not JSON: %q", raw)
	}
	return out
}

func pkBegunOf(t *testing.T, raw []byte) pkBegun {
	t.Helper()
	var b pkBegun
	if err := json.Unmarshal(raw, &b); err != nil || b.Ceremony == "" || b.Options.Challenge == "" {
		t.Fatalf("options answer %s: %v", raw, err)
	}
	return b
}

var pkDataCSRF = regexp.MustCompile(`data-csrf="([^"]+)"`)

// pkSignIn is an authorization in progress in one browser.
type pkSignIn struct {
	b                         *browser
	challenge, csrf, verifier string
}

// start begins a CLI authorization in a new browser, at the login page.
func (f *pkFixture) start(t *testing.T) (pkSignIn, page) {
	t.Helper()
	s := pkSignIn{b: newBrowser(t, f.ts.Issuer), verifier: oauth2.GenerateVerifier()}
	p := s.b.get(cliConfig(f.ts.Issuer, "53682").AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(s.verifier)))
	if p.Request.URL.Path != "/login" {
		t.Fatalf("the authorization went to %s (%d), want the login page", p.Request.URL, p.StatusCode)
	}
	s.challenge, s.csrf = formValues(p).Get("challenge"), formValues(p).Get("csrf_token")
	if s.challenge == "" || s.csrf == "" {
		t.Fatalf("the login page has no challenge or CSRF token: %s", p.Body)
	}
	return s, p
}

// afterPassword begins a CLI authorization in a new browser and signs in
// with username's password: the server's step is the passkey page.
func (f *pkFixture) afterPassword(t *testing.T, username string) pkSignIn {
	t.Helper()
	s, p := f.start(t)
	p = s.b.login(p, username, alicePassword)
	if p.StatusCode != http.StatusOK || p.Request.URL.Path != "/login/passkey" {
		t.Fatalf("after the password, want the passkey page, got %d at %s: %s", p.StatusCode, p.Request.URL, p.Body)
	}
	if got := p.Request.URL.Query().Get("challenge"); got != s.challenge {
		t.Fatalf("the passkey page is for challenge %q, want %q", got, s.challenge)
	}
	m := pkDataCSRF.FindStringSubmatch(p.Body)
	if m == nil || !strings.Contains(p.Body, `data-passkey-login="second"`) {
		t.Fatalf("the passkey page has no passkey button: %s", p.Body)
	}
	if m[1] != s.csrf {
		t.Fatalf("the passkey page's CSRF token %q is not the login page's %q", m[1], s.csrf)
	}
	return s
}

// begin asks for a sign-in's options.
func (s pkSignIn) begin(t *testing.T, mode string) pkBegun {
	t.Helper()
	status, raw := pkPost(t, s.b, "/login/passkey/options", s.csrf, map[string]any{"challenge": s.challenge, "mode": mode})
	if status != http.StatusOK {
		t.Fatalf("sign-in options (%s): %d %s", mode, status, raw)
	}
	return pkBegunOf(t, raw)
}

func pkFinishBody(t *testing.T, begun pkBegun, mode string, cred map[string]any) []byte {
	t.Helper()
	data, err := json.Marshal(map[string]any{"ceremony": begun.Ceremony, "mode": mode, "credential": cred})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// finish posts a sign-in's answer, which must be accepted, follows "next"
// to the client, and returns the token's amr, sorted.
func (f *pkFixture) finish(t *testing.T, s pkSignIn, body []byte) []string {
	t.Helper()
	status, raw := pkPostRaw(t, s.b, "/login/passkey", s.csrf, body)
	if status != http.StatusOK {
		t.Fatalf("the passkey's answer was refused: %d %s", status, raw)
	}
	next, _ := pkJSON(t, raw)["next"].(string)
	if !strings.HasPrefix(next, "/login/passkey/continue?challenge=") {
		t.Fatalf("next %q", next)
	}
	p := s.b.get(f.ts.Issuer + next)
	back := redirectOf(t, p)
	if back.Host != "127.0.0.1:53682" || back.Query().Get("code") == "" {
		t.Fatalf("the sign-in ended at %s, want the CLI's callback with a code", back)
	}
	tok := tokensFrom(t, f.ts, p, s.verifier)
	amr := mfaAMR(t, tok)
	slices.Sort(amr)
	return amr
}

// refused posts a sign-in's answer, which must be refused with want in
// its description, and logged as refused with reason in the reason.
func (f *pkFixture) refused(t *testing.T, s pkSignIn, body []byte, want, reason string) {
	t.Helper()
	mark := f.log.mark()
	status, raw := pkPostRaw(t, s.b, "/login/passkey", s.csrf, body)
	got := pkJSON(t, raw)
	if status != http.StatusBadRequest || got["error"] != "passkey_refused" {
		t.Fatalf("answered %d %s, want 400 passkey_refused", status, raw)
	}
	if d, _ := got["error_description"].(string); !strings.Contains(d, want) {
		t.Errorf("error_description %q, want it to say %q", d, want)
	}
	if got := f.loggedRefusal(t, mark); !strings.Contains(got, reason) {
		t.Errorf("logged reason %q, want it to say %q", got, reason)
	}
}

// refusedRegistration checks a registration's answer: status and error,
// want in the description, and for a 400 a logged refusal with reason.
func (f *pkFixture) refusedRegistration(t *testing.T, mark, status int, raw []byte, wantStatus int, want, reason string) {
	t.Helper()
	got := pkJSON(t, raw)
	if status != wantStatus || got["error"] != "passkey_refused" {
		t.Fatalf("answered %d %s, want %d passkey_refused", status, raw, wantStatus)
	}
	if d, _ := got["error_description"].(string); !strings.Contains(d, want) {
		t.Errorf("error_description %q, want it to say %q", d, want)
	}
	if reason == "" {
		return
	}
	if got := f.loggedRefusal(t, mark); !strings.Contains(got, reason) {
		t.Errorf("logged reason %q, want it to say %q", got, reason)
	}
}

// loggedRefusal checks that a refusal since mark was logged, with a
// reason, and returns that reason.
func (f *pkFixture) loggedRefusal(t *testing.T, mark int) string {
	t.Helper()
	recs := f.log.since(t, mark)
	for _, rec := range recs {
		if rec["msg"] == "passkey refused" && rec["level"] == "WARN" {
			reason, _ := rec["reason"].(string)
			if strings.TrimSpace(reason) == "" {
				t.Errorf("a refusal logged without a reason: %v", rec)
			}
			t.Logf("logged: passkey refused, ceremony %v, user %q, reason %q", rec["ceremony"], rec["user"], reason)
			return reason
		}
	}
	t.Errorf("no \"passkey refused\" in the log; it has %v", recs)
	return ""
}

// storedCount is the signature counter the server keeps for key.
func (f *pkFixture) storedCount(t *testing.T, userID string, key *pkKey) uint32 {
	t.Helper()
	data, err := f.ts.Store.Get(bg, "passkeys", userID)
	if err != nil {
		t.Fatal(err)
	}
	var keys []struct {
		ID         string `json:"id"`
		Credential struct {
			Authenticator struct {
				SignCount uint32 `json:"signCount"`
			} `json:"authenticator"`
		} `json:"credential"`
	}
	if err := json.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == pkB64.EncodeToString(key.id) {
			return k.Credential.Authenticator.SignCount
		}
	}
	t.Fatalf("%s has no passkey %s: %s", userID, pkB64.EncodeToString(key.id), data)
	return 0
}

func TestPasskeysOverHTTP(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		if len(begun.Options.AllowCredentials) != 1 || begun.Options.AllowCredentials[0].ID != pkB64.EncodeToString(f.alice.id) {
			t.Errorf("allowCredentials %v, want alice's one key", begun.Options.AllowCredentials)
		}
		if begun.Options.RPID != "localhost" {
			t.Errorf("rpId %q, want localhost", begun.Options.RPID)
		}
		amr := f.finish(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV})))
		if want := []string{"mfa", "phr", "pwd", "swk", "user"}; !slices.Equal(amr, want) {
			t.Errorf("amr %v, want %v", amr, want)
		}
		if got := f.storedCount(t, "u_alice", f.alice); got != f.alice.count {
			t.Errorf("stored counter %d, want %d", got, f.alice.count)
		}
	})

	t.Run("ok/security-key", func(t *testing.T) {
		// A cross-platform key, which does not verify the person: hwk,
		// and no "user".
		f := newPKFixture(t)
		key := newPKKey(t, "cross-platform")
		f.register(t, "bob", key, pkFlagUP, "hwk")
		s := f.afterPassword(t, "bob")
		begun := s.begin(t, "second")
		amr := f.finish(t, s, pkFinishBody(t, begun, "second", key.get(t, begun, f.origin, pkUse{})))
		if want := []string{"hwk", "mfa", "phr", "pwd"}; !slices.Equal(amr, want) {
			t.Errorf("amr %v, want %v", amr, want)
		}
	})

	t.Run("fail/replayed-assertion", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		body := pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV}))
		status, raw := pkPostRaw(t, s.b, "/login/passkey", s.csrf, body)
		if status != http.StatusOK {
			t.Fatalf("the first answer: %d %s", status, raw)
		}
		f.refused(t, s, body, "expired or was already used", "already used")
	})

	t.Run("fail/other-users-credential", func(t *testing.T) {
		f := newPKFixture(t)
		bobs := newPKKey(t, "platform")
		f.register(t, "bob", bobs, pkFlagUP|pkFlagUV, "swk")
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		f.refused(t, s, pkFinishBody(t, begun, "second", bobs.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV})), "not accepted", "not owned by the user")
		// Without a password either: bob's key claiming to be alice's.
		s, _ = f.start(t)
		begun = s.begin(t, "first")
		cred := bobs.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV})
		cred["response"].(map[string]any)["userHandle"] = pkB64.EncodeToString([]byte("u_alice"))
		f.refused(t, s, pkFinishBody(t, begun, "first", cred), "not accepted", "Unable to find the credential")
	})

	t.Run("fail/wrong-origin", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		f.refused(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, origin: "http://evil.example"})), "not accepted", "origin")
	})

	t.Run("fail/cloned-authenticator", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		f.finish(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, count: 5})))
		if got := f.storedCount(t, "u_alice", f.alice); got != 5 {
			t.Fatalf("stored counter %d after an assertion with 5", got)
		}
		s = f.afterPassword(t, "alice")
		begun = s.begin(t, "second")
		f.refused(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, count: 3})), "counter went back", "counter went back")
		if got := f.storedCount(t, "u_alice", f.alice); got != 5 {
			t.Errorf("stored counter %d after a refused assertion with 3, want 5 still", got)
		}
	})

	t.Run("fail/no-csrf-header", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		for _, path := range []string{"/login/passkey/options", "/login/passkey", "/account/security/passkeys/options", "/account/security/passkeys"} {
			for _, csrf := range []string{"", "not-the-token"} {
				status, raw := pkPost(t, s.b, path, csrf, map[string]any{"challenge": s.challenge, "mode": "second"})
				if status != http.StatusForbidden || pkJSON(t, raw)["error"] != "invalid_request" {
					t.Errorf("%s with X-CSRF-Token %q: %d %s, want 403 invalid_request", path, csrf, status, raw)
				}
			}
		}
		// The right token, but another browser's cookie.
		other, _ := f.start(t)
		status, raw := pkPost(t, other.b, "/login/passkey/options", s.csrf, map[string]any{"challenge": s.challenge, "mode": "second"})
		if status != http.StatusForbidden {
			t.Errorf("another browser's token: %d %s, want 403", status, raw)
		}
	})

	t.Run("fail/wrong-challenge", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		other := pkB64.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
		f.refused(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, challenge: other})), "not accepted", "challenge")
		// Nor the challenge of another ceremony of the same browser.
		first, second := s.begin(t, "second"), s.begin(t, "second")
		f.refused(t, s, pkFinishBody(t, first, "second", f.alice.get(t, first, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, challenge: second.Options.Challenge})), "not accepted", "challenge")
	})

	t.Run("fail/ceremony-from-another-browser", func(t *testing.T) {
		f := newPKFixture(t)
		a := f.afterPassword(t, "alice")
		begun := a.begin(t, "second")
		body := pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV}))
		// Browser B is alice too, at the same step of her own sign-in:
		// only the browser differs.
		b := f.afterPassword(t, "alice")
		f.refused(t, b, body, "expired or was already used", "already used")
		// The refusal left the ceremony to the browser that began it.
		if amr := f.finish(t, a, body); !slices.Contains(amr, "phr") {
			t.Errorf("after another browser's refused try, amr %v", amr)
		}
	})

	t.Run("fail/registration-of-another-persons-credential-id", func(t *testing.T) {
		// bob's authenticator makes a credential with the id of alice's
		// (WebAuthn §7.1: an id registered to anyone is refused).
		f := newPKFixture(t)
		twin := newPKKey(t, "platform")
		twin.id = f.alice.id
		reg := f.beginRegistration(t, "bob")
		mark := f.log.mark()
		status, raw := reg.post(t, twin.create(t, reg.begun, f.origin, pkFlagUP|pkFlagUV))
		f.refusedRegistration(t, mark, status, raw, http.StatusConflict, "registered already", "registered already")
	})

	t.Run("ok/passwordless", func(t *testing.T) {
		f := newPKFixture(t)
		if got := string(f.alice.userHandle); got != "u_alice" {
			t.Fatalf("the registration's user.id is %q, want alice's id", got)
		}
		s, p := f.start(t)
		if !strings.Contains(p.Body, `data-passkey-login="first"`) {
			t.Errorf("the login page offers no passkey: %s", p.Body)
		}
		begun := s.begin(t, "first")
		if len(begun.Options.AllowCredentials) != 0 || begun.Options.UserVerification != "required" {
			t.Errorf("passwordless options: allowCredentials %v, userVerification %q; want none and required",
				begun.Options.AllowCredentials, begun.Options.UserVerification)
		}
		amr := f.finish(t, s, pkFinishBody(t, begun, "first", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, userHandle: true})))
		if want := []string{"mfa", "phr", "swk", "user"}; !slices.Equal(amr, want) {
			t.Errorf("amr %v, want %v", amr, want)
		}
	})

	t.Run("fail/passwordless-without-uv", func(t *testing.T) {
		f := newPKFixture(t)
		s, _ := f.start(t)
		begun := s.begin(t, "first")
		f.refused(t, s, pkFinishBody(t, begun, "first", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP, userHandle: true})), "not accepted", "User verification required")
	})

	t.Run("fail/mode-of-another-ceremony", func(t *testing.T) {
		// A second-factor ceremony finished as a passwordless one.
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		f.refused(t, s, pkFinishBody(t, begun, "first", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV, userHandle: true})), "expired or was already used", "already used")
	})

	t.Run("fail/registration-replayed", func(t *testing.T) {
		f := newPKFixture(t)
		reg := f.beginRegistration(t, "bob")
		body := newPKKey(t, "platform").create(t, reg.begun, f.origin, pkFlagUP|pkFlagUV)
		if status, raw := reg.post(t, body); status != http.StatusCreated {
			t.Fatalf("the first answer: %d %s", status, raw)
		}
		mark := f.log.mark()
		status, raw := reg.post(t, body)
		f.refusedRegistration(t, mark, status, raw, http.StatusBadRequest, "expired or was already used", "already used")
	})

	t.Run("fail/registration-wrong-origin", func(t *testing.T) {
		f := newPKFixture(t)
		reg := f.beginRegistration(t, "bob")
		mark := f.log.mark()
		status, raw := reg.post(t, newPKKey(t, "platform").create(t, reg.begun, "http://evil.example", pkFlagUP|pkFlagUV))
		f.refusedRegistration(t, mark, status, raw, http.StatusBadRequest, "not accepted", "origin")
	})

	t.Run("fail/registration-from-another-browser", func(t *testing.T) {
		f := newPKFixture(t)
		a := f.beginRegistration(t, "bob")
		cred := newPKKey(t, "platform").create(t, a.begun, f.origin, pkFlagUP|pkFlagUV)
		b := f.beginRegistration(t, "bob") // bob too, signed in
		b.begun.Ceremony = a.begun.Ceremony
		mark := f.log.mark()
		status, raw := b.post(t, cred)
		f.refusedRegistration(t, mark, status, raw, http.StatusBadRequest, "expired or was already used", "already used")
	})

	t.Run("fail/registration-of-a-known-key", func(t *testing.T) {
		f := newPKFixture(t)
		// alice signs in with her password and key, to add another.
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		f.finish(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV})))
		reg := f.beginRegistrationIn(t, s.b)
		if len(reg.begun.Options.ExcludeCredentials) != 1 || reg.begun.Options.ExcludeCredentials[0].ID != pkB64.EncodeToString(f.alice.id) {
			t.Errorf("excludeCredentials %v, want alice's key", reg.begun.Options.ExcludeCredentials)
		}
		status, raw := reg.post(t, f.alice.create(t, reg.begun, f.origin, pkFlagUP|pkFlagUV))
		f.refusedRegistration(t, 0, status, raw, http.StatusConflict, "registered already", "")
	})

	t.Run("fail/registration-signed-out", func(t *testing.T) {
		f := newPKFixture(t)
		s, _ := f.start(t)
		status, raw := pkPost(t, s.b, "/account/security/passkeys/options", s.csrf, map[string]any{})
		if status != http.StatusUnauthorized || pkJSON(t, raw)["error"] != "login_required" {
			t.Errorf("registration options without a session: %d %s, want 401 login_required", status, raw)
		}
	})

	t.Run("fail/expired-ceremony", func(t *testing.T) {
		f := newPKFixture(t)
		s := f.afterPassword(t, "alice")
		begun := s.begin(t, "second")
		f.ts.Clock.Advance(5*time.Minute + time.Second)
		f.refused(t, s, pkFinishBody(t, begun, "second", f.alice.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV})), "expired or was already used", "already used")
	})

	t.Run("ok/ip-issuer", func(t *testing.T) {
		ts := newTestServer(t, nil)
		b := newBrowser(t, ts.Issuer)
		p := b.get(cliConfig(ts.Issuer, "53682").AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if p.Request.URL.Path != "/login" {
			t.Fatalf("the authorization went to %s, want the login page", p.Request.URL)
		}
		if strings.Contains(p.Body, "data-passkey-login") {
			t.Errorf("the login page on %s offers a passkey", ts.Issuer)
		}
		form := formValues(p)
		status, raw := pkPost(t, b, "/login/passkey/options", form.Get("csrf_token"), map[string]any{"challenge": form.Get("challenge"), "mode": "first"})
		if status != http.StatusNotFound || pkJSON(t, raw)["error"] != "passkeys_unavailable" {
			t.Errorf("options on %s: %d %s, want 404 passkeys_unavailable", ts.Issuer, status, raw)
		}
		hb, _ := loginAs(t, ts, "alice")
		if p := hb.get(ts.Issuer + "/account/security"); p.StatusCode != http.StatusOK || strings.Contains(p.Body, "data-passkey-add") {
			t.Errorf("the security page on %s (%d) offers to add a passkey", ts.Issuer, p.StatusCode)
		}
	})
}

// TestPasskeyRemovalEndsItsLogins: removing a passkey ends what the
// logins that proved a key got, as turning MFA off does for an otp: their
// access tokens are refused with the reason, their refresh fails, their SSH
// certificates are revoked, their API tokens lose the key's methods, and
// the browser session keeps its password but
// not the key, so its next tokens say pwd alone. A password-only login's
// tokens and certificates go on working.
func TestPasskeyRemovalEndsItsLogins(t *testing.T) {
	f := newPKFixture(t)
	// bob signs in with his password before he has a passkey, then adds
	// one and signs in with it.
	_, pwdOnly := loginAs(t, f.ts, "bob")
	key := newPKKey(t, "platform")
	f.register(t, "bob", key, pkFlagUP|pkFlagUV, "swk")
	s := f.afterPassword(t, "bob")
	begun := s.begin(t, "second")
	status, raw := pkPostRaw(t, s.b, "/login/passkey", s.csrf, pkFinishBody(t, begun, "second", key.get(t, begun, f.origin, pkUse{flags: pkFlagUP | pkFlagUV})))
	if status != http.StatusOK {
		t.Fatalf("the passkey's answer: %d %s", status, raw)
	}
	next, _ := pkJSON(t, raw)["next"].(string)
	withKey := tokensFrom(t, f.ts, s.b.get(f.ts.Issuer+next), s.verifier)
	if !slices.Contains(amrOf(t, withKey), "swk") {
		t.Fatalf("the passkey login's amr: %v", amrOf(t, withKey))
	}
	for name, tok := range map[string]string{"the key login's": withKey.AccessToken, "the password login's": pwdOnly.AccessToken} {
		if status, _, _ := call(t, "GET", f.ts.Issuer+"/api/me", tok, nil); status != http.StatusOK {
			t.Fatalf("before the removal, %s token: %d", name, status)
		}
	}

	keyCert, pwdCert := certFor(t, f.ts, withKey.AccessToken), certFor(t, f.ts, pwdOnly.AccessToken)
	status, _, created := call(t, "POST", f.ts.Issuer+"/api/me/api-tokens", withKey.AccessToken, map[string]any{"name": "deploys"})
	apiToken, _ := created["token"].(string)
	if status != http.StatusCreated || apiToken == "" {
		t.Fatalf("an API token from the key login: %d %v", status, created)
	}
	apiAMR := func() []string {
		t.Helper()
		status, body := postForm(t, f.ts.Issuer+"/oauth2/token", url.Values{"grant_type": {"api_token"}, "api_token": {apiToken},
			"client_id": {cliClient}, "scope": {"openid"}}, "", "")
		if status != http.StatusOK {
			t.Fatalf("exchanging the API token: %d %v", status, body)
		}
		_, c := jwtParts(t, body["access_token"].(string))
		return strs(c["amr"])
	}
	if got := apiAMR(); !slices.Contains(got, "swk") {
		t.Fatalf("the API token's amr before the removal: %v", got)
	}

	// The key's own session removes it.
	p := s.b.get(f.ts.Issuer + "/account/security")
	form := formValues(p)
	form.Set("id", pkB64.EncodeToString(key.id))
	p = s.b.post(f.ts.Issuer+"/account/security/passkeys/remove", form)
	if p.StatusCode != http.StatusOK || !strings.Contains(p.Body, "is removed") {
		t.Fatalf("removing the passkey: %d %s", p.StatusCode, p.Body)
	}

	if status, _, body := call(t, "GET", f.ts.Issuer+"/api/me", withKey.AccessToken, nil); status != http.StatusUnauthorized ||
		!strings.Contains(fmt.Sprint(body["error_description"]), "A passkey was removed") {
		t.Errorf("the key login's access token after the removal: %d %v", status, body)
	}
	if status, body := refresh(t, f.ts, withKey.RefreshToken); status != http.StatusBadRequest || body["error"] != "invalid_grant" ||
		!strings.Contains(fmt.Sprint(body["error_description"]), "passkey was removed") {
		t.Errorf("the key login's refresh after the removal: %d %v", status, body)
	}
	if status, _, _ := call(t, "GET", f.ts.Issuer+"/api/me", pwdOnly.AccessToken, nil); status != http.StatusOK {
		t.Errorf("the password login's token after the removal: %d", status)
	}
	if got := apiAMR(); !slices.Equal(got, []string{"pwd"}) {
		t.Errorf("the API token's amr after the removal: %v, want [pwd]", got)
	}
	if r := fetchRevoked(t, f.ts); !r.serials[keyCert.Serial] || r.serials[pwdCert.Serial] {
		t.Errorf("revoked serials %v: want the key login's certificate %d, not the password login's %d", r.serials, keyCert.Serial, pwdCert.Serial)
	}
	v := oauth2.GenerateVerifier()
	again := tokensFrom(t, f.ts, s.b.get(cliConfig(f.ts.Issuer, "53682").AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))), v)
	if got := amrOf(t, again); !slices.Equal(got, []string{"pwd"}) {
		t.Errorf("the browser session's next tokens after the removal: amr %v, want [pwd]", got)
	}
}

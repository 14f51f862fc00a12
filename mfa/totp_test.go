package mfa

import (
	"bytes"
	"encoding/base32"
	"errors"
	"image/png"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
)

// rfcSecret is RFC 6238 Appendix B's SHA-1 key, ASCII "12345678901234567890".
var rfcSecret = base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))

// The RFC 6238 vectors pin the library to the standard. The 6-digit codes used
// below are the last six digits of these (the truncated value mod 10^6), so
// the Verify tests rest on published numbers rather than on the library.
func TestRFC6238Vectors(t *testing.T) {
	for _, tc := range []struct {
		name string
		unix int64
		want string
	}{
		{"ok/59", 59, "94287082"},
		{"ok/1111111109", 1111111109, "07081804"},
		{"ok/1111111111", 1111111111, "14050471"},
		{"ok/1234567890", 1234567890, "89005924"},
		{"ok/2000000000", 2000000000, "69279037"},
		{"ok/20000000000", 20000000000, "65353130"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := codeAt(rfcSecret, time.Unix(tc.unix, 0), otp.DigitsEight)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("code at %d = %s, want %s", tc.unix, got, tc.want)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	// At unix 1111111111 (step 37037037) the code is 050471; the step before
	// (37037036, e.g. unix 1111111109) has 081804.
	const step = 37037037
	for _, tc := range []struct {
		name     string
		secret   string
		code     string
		unix     int64
		skew     uint
		wantStep int64
		wantErr  error
	}{
		{name: "ok/current", code: "050471", unix: 1111111111, skew: 1, wantStep: step},
		{name: "ok/current-no-skew", code: "050471", unix: 1111111111, wantStep: step},
		{name: "ok/start-of-step", code: "050471", unix: step * 30, wantStep: step},
		{name: "ok/end-of-step", code: "050471", unix: step*30 + 29, wantStep: step},
		{name: "ok/previous-step", code: "081804", unix: 1111111111, skew: 1, wantStep: step - 1},
		{name: "ok/next-step", code: "050471", unix: (step - 1) * 30, skew: 1, wantStep: step},
		{name: "fail/previous-step-no-skew", code: "081804", unix: 1111111111, wantErr: ErrWrongCode},
		{name: "fail/next-step-no-skew", code: "050471", unix: (step - 1) * 30, wantErr: ErrWrongCode},
		{name: "fail/two-steps-old-skew-1", code: "050471", unix: (step + 2) * 30, skew: 1, wantErr: ErrWrongCode},
		{name: "ok/two-steps-old-skew-2", code: "050471", unix: (step + 2) * 30, skew: 2, wantStep: step},
		{name: "fail/two-steps-ahead-skew-1", code: "050471", unix: (step - 2) * 30, skew: 1, wantErr: ErrWrongCode},
		{name: "ok/two-steps-ahead-skew-2", code: "050471", unix: (step - 2) * 30, skew: 2, wantStep: step},
		{name: "ok/spaced", code: "050 471", unix: 1111111111, skew: 1, wantStep: step},
		{name: "ok/padded", code: "  05 04 71\t", unix: 1111111111, skew: 1, wantStep: step},
		{name: "ok/no-break-space", code: "050\u00a0471", unix: 1111111111, skew: 1, wantStep: step},
		{name: "ok/near-epoch", code: "287082", unix: 59, skew: 1, wantStep: 1},
		{name: "ok/at-epoch-skips-negative-step", code: "287082", unix: 0, skew: 1, wantStep: 1},
		{name: "ok/year-2603", code: "353130", unix: 20000000000, skew: 1, wantStep: 20000000000 / 30},
		{name: "ok/lowercase-secret", secret: strings.ToLower(rfcSecret), code: "050471", unix: 1111111111, wantStep: step},
		// The library's secret and time, searched offline: steps 59061240 and
		// 59061241 both give 963181, and the newer one must be reported.
		{name: "ok/same-code-two-steps-newest-wins", code: "963181", unix: 59061240 * 30, skew: 1, wantStep: 59061241},
		{name: "fail/wrong", code: "050472", unix: 1111111111, skew: 1, wantErr: ErrWrongCode},
		{name: "fail/other-time", code: "050471", unix: 1234567890, skew: 1, wantErr: ErrWrongCode},
		{name: "fail/five-digits", code: "12345", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/letters", code: "abcdef", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/seven-digits", code: "1234567", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/right-code-plus-digit", code: "0504710", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/empty", code: "", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/spaces-only", code: "   ", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/dash", code: "050-471", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/sign", code: "+50471", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/fullwidth-digits", code: "０５０４７１", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/arabic-indic-digits", code: "٠٥٠٤٧١", unix: 1111111111, wantErr: ErrMalformedCode},
		{name: "fail/empty-secret", secret: "-", code: "050471", unix: 1111111111, wantErr: ErrInvalidSecret},
		{name: "fail/short-secret", secret: "JBSWY3DPEHPK3PXP", code: "050471", unix: 1111111111, wantErr: ErrInvalidSecret},
		{name: "fail/not-base32", secret: "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ!", code: "050471", unix: 1111111111, wantErr: ErrInvalidSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := tc.secret
			switch secret {
			case "":
				secret = rfcSecret
			case "-":
				secret = ""
			}
			got, err := Verify(secret, tc.code, time.Unix(tc.unix, 0), tc.skew)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Verify(%q) error = %v, want %v", tc.code, err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if got != tc.wantStep {
				t.Fatalf("Verify(%q) step = %d, want %d", tc.code, got, tc.wantStep)
			}
		})
	}
}

func TestVerifyRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		unix int64
		skew uint
	}{
		{"fail/before-epoch", -1, 1},
		{"fail/far-future", 1 << 60, 1},
		{"fail/huge-skew", 1111111111, 1 << 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(rfcSecret, "050471", time.Unix(tc.unix, 0), tc.skew)
			if err == nil || errors.Is(err, ErrWrongCode) || errors.Is(err, ErrMalformedCode) {
				t.Fatalf("Verify error = %v, want a server-side error", err)
			}
		})
	}
}

func TestNewKey(t *testing.T) {
	k, err := NewKey("Stepup", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsRune(k.Secret, '=') {
		t.Errorf("secret %q is padded", k.Secret)
	}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(k.Secret)
	if err != nil || len(raw) != 20 {
		t.Fatalf("secret %q decodes to %d bytes (%v), want 20", k.Secret, len(raw), err)
	}

	u, err := url.Parse(k.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/Stepup:alice" {
		t.Errorf("URL %s: want otpauth://totp/Stepup:alice", k.URL)
	}
	q := u.Query()
	for key, want := range map[string]string{
		"secret":    k.Secret,
		"issuer":    "Stepup",
		"algorithm": "SHA1",
		"digits":    "6",
		"period":    "30",
	} {
		if got := q.Get(key); got != want {
			t.Errorf("URL %s: %s = %q, want %q", k.URL, key, got, want)
		}
	}

	// The fresh secret works end to end with Verify.
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	code, err := codeAt(k.Secret, now, otp.DigitsSix)
	if err != nil {
		t.Fatal(err)
	}
	if step, err := Verify(k.Secret, code, now, 1); err != nil || step != now.Unix()/30 {
		t.Fatalf("Verify(new key) = %d, %v; want %d", step, err, now.Unix()/30)
	}

	other, err := NewKey("Stepup", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if other.Secret == k.Secret {
		t.Fatal("two keys share a secret")
	}
}

func TestNewKeyEscapes(t *testing.T) {
	k, err := NewKey("Stepup Dev", "alice smith")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(k.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Path != "/Stepup Dev:alice smith" || u.Query().Get("issuer") != "Stepup Dev" {
		t.Fatalf("URL %s does not round-trip issuer and account", k.URL)
	}
}

func TestNewKeyRefuses(t *testing.T) {
	for _, tc := range []struct{ name, issuer, account string }{
		{"fail/no-issuer", "", "alice"},
		{"fail/no-account", "Stepup", ""},
		{"fail/colon-in-issuer", "127.0.0.1:8080", "alice"},
		{"fail/colon-in-account", "Stepup", "a:lice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, err := NewKey(tc.issuer, tc.account); err == nil {
				t.Fatalf("NewKey(%q, %q) = %+v, want an error", tc.issuer, tc.account, k)
			}
		})
	}
}

func TestQRCodePNG(t *testing.T) {
	k, err := NewKey("Stepup", "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int
		ok   bool
	}{
		{"ok/200", 200, true},
		{"ok/256", 256, true},
		{"fail/zero", 0, false},
		{"fail/negative", -1, false},
		{"fail/smaller-than-modules", 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := k.QRCodePNG(tc.size)
			if !tc.ok {
				if err == nil {
					t.Fatalf("QRCodePNG(%d) succeeded, want an error", tc.size)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if r := img.Bounds(); r.Dx() != tc.size || r.Dy() != tc.size {
				t.Fatalf("image is %v, want %d×%d", r, tc.size, tc.size)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	for _, s := range []string{"050471", "050 471", "", "12345", "1234567", "abcdef", "٠٥٠٤٧١", "\xff\xfe", "0\u00a05\u20030471"} {
		f.Add(s, int64(1111111111), uint8(1))
	}
	f.Fuzz(func(t *testing.T, code string, unix int64, skew uint8) {
		step, err := Verify(rfcSecret, code, time.Unix(unix, 0), uint(skew))
		// Malformed exactly when the input is not six ASCII digits once
		// whitespace is gone, whatever the time and skew.
		digits := strings.Join(strings.Fields(code), "")
		wellFormed := len(digits) == Digits && strings.Trim(digits, "0123456789") == ""
		if errors.Is(err, ErrMalformedCode) == wellFormed {
			t.Fatalf("Verify(%q): error %v, well-formed %v", code, err, wellFormed)
		}
		if err == nil {
			center := unix / 30
			if step < 0 || step < center-int64(skew) || step > center+int64(skew) {
				t.Fatalf("Verify(%q) at %d skew %d: step %d out of window", code, unix, skew, step)
			}
		}
	})
}

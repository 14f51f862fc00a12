package mfa

import (
	"regexp"
	"strings"
	"testing"
)

var recoveryFormat = regexp.MustCompile(`^[2-9a-km-np-z]{5}-[2-9a-km-np-z]{5}$`)

func TestRecoveryAlphabet(t *testing.T) {
	// 32 distinct symbols × 10 characters is the promised 50 bits.
	seen := map[rune]bool{}
	for _, r := range recoveryAlphabet {
		if seen[r] {
			t.Fatalf("%q appears twice", r)
		}
		seen[r] = true
	}
	if len(seen) != 32 || recoveryCodeLen != 10 {
		t.Fatalf("%d symbols × %d characters, want 32 × 10", len(seen), recoveryCodeLen)
	}
	if strings.ContainsAny(recoveryAlphabet, "01lo") {
		t.Fatalf("alphabet %q has a look-alike", recoveryAlphabet)
	}
}

func TestNewRecoveryCodes(t *testing.T) {
	codes, err := NewRecoveryCodes(RecoveryCodeCount)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != RecoveryCodeCount {
		t.Fatalf("got %d codes, want %d", len(codes), RecoveryCodeCount)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if !recoveryFormat.MatchString(c) {
			t.Errorf("code %q is not xxxxx-xxxxx from the alphabet", c)
		}
		if seen[c] {
			t.Errorf("code %q repeats", c)
		}
		seen[c] = true
		n, ok := NormalizeRecoveryCode(c)
		if !ok || n != strings.ReplaceAll(c, "-", "") {
			t.Errorf("NormalizeRecoveryCode(%q) = %q, %v", c, n, ok)
		}
		if !LooksLikeRecoveryCode(c) {
			t.Errorf("LooksLikeRecoveryCode(%q) = false", c)
		}
	}

	// Many batches: every symbol shows up, so no part of the alphabet is
	// dead weight that would quietly cut the entropy.
	used := map[rune]bool{}
	for range 50 {
		more, err := NewRecoveryCodes(RecoveryCodeCount)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range more {
			for _, r := range strings.ReplaceAll(c, "-", "") {
				used[r] = true
			}
		}
	}
	if len(used) != len(recoveryAlphabet) {
		t.Errorf("5000 characters used %d of %d symbols", len(used), len(recoveryAlphabet))
	}

	if codes, err := NewRecoveryCodes(0); err != nil || len(codes) != 0 {
		t.Errorf("NewRecoveryCodes(0) = %v, %v", codes, err)
	}
	if _, err := NewRecoveryCodes(-1); err == nil {
		t.Error("NewRecoveryCodes(-1) succeeded")
	}
}

func TestNormalizeRecoveryCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string // "" means ok=false
	}{
		{"ok/as-issued", "abcde-fghij", "abcdefghij"},
		{"ok/no-dash", "abcdefghij", "abcdefghij"},
		{"ok/uppercase", "ABCDE-FGHIJ", "abcdefghij"},
		{"ok/mixed-case", "aBcDe-FgHiJ", "abcdefghij"},
		{"ok/space-instead-of-dash", "abcde fghij", "abcdefghij"},
		{"ok/surrounding-space", "  abcde-fghij\t\n", "abcdefghij"},
		{"ok/grouped-differently", "ab-cd-ef-gh-ij", "abcdefghij"},
		{"ok/double-dash", "abcde--fghij", "abcdefghij"},
		{"ok/digits", "23456-789ab", "23456789ab"},
		{"ok/no-break-space", "abcde\u00a0fghij", "abcdefghij"},
		{"fail/empty", "", ""},
		{"fail/dashes-only", "-----", ""},
		{"fail/nine", "abcde-fghi", ""},
		{"fail/eleven", "abcde-fghijk", ""},
		{"fail/zero", "abcde-fghi0", ""},
		{"fail/one", "abcde-fghi1", ""},
		{"fail/ell", "abcde-fghil", ""},
		{"fail/oh", "abcde-fghio", ""},
		{"fail/uppercase-oh", "ABCDE-FGHIO", ""},
		{"fail/uppercase-ell", "ABCDE-FGHIL", ""},
		{"fail/underscore", "abcde_fghij", ""},
		{"fail/dotless-i", "abcde-fghıj", ""},
		{"fail/kelvin-sign", "abcde-fghi\u212a", ""},
		{"fail/fullwidth", "ａｂｃｄｅ-ｆｇｈｉｊ", ""},
		{"fail/totp-code", "123456", ""},
		{"fail/invalid-utf8", "abcde-fghi\xff", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := NormalizeRecoveryCode(tc.in)
			if ok != (tc.want != "") || got != tc.want {
				t.Fatalf("NormalizeRecoveryCode(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			}
		})
	}
}

func TestLooksLikeRecoveryCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{"ok/code", "abcde-fghij", true},
		{"ok/code-no-dash", "abcdefghij", true},
		{"ok/code-uppercase-spaced", "ABCDE FGHIJ", true},
		{"ok/all-digit-code", "23456-78923", true},
		{"ok/all-digit-code-spaced", "23456 78923", true},
		{"ok/mistyped-code", "abcde-fghi0", true},
		{"ok/letters", "abcdef", true},
		{"fail/totp", "123456", false},
		{"fail/totp-spaced", "123 456", false},
		{"fail/totp-too-short", "12345", false},
		{"fail/totp-too-long", "1234567", false},
		{"fail/empty", "", false},
		{"fail/spaces", "   ", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LooksLikeRecoveryCode(tc.in); got != tc.want {
				t.Fatalf("LooksLikeRecoveryCode(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestRecoveryHasher(t *testing.T) {
	h := NewRecoveryHasher([]byte("0123456789abcdef0123456789abcdef"))
	other := NewRecoveryHasher([]byte("fedcba9876543210fedcba9876543210"))
	codes := []string{"abcde-fghij", "23456-789ab", "zyxwv-utsrq", "mnpqr-stuvw"}
	hashes := make([]string, len(codes))
	for i, c := range codes {
		hashes[i] = h.Hash(c)
	}

	if got := h.Hash("ABCDE FGHIJ"); got != hashes[0] {
		t.Errorf("Hash is not of the normalized code: %s vs %s", got, hashes[0])
	}
	if other.Hash(codes[0]) == hashes[0] {
		t.Error("two keys give the same hash")
	}

	for _, tc := range []struct {
		name   string
		hasher *RecoveryHasher
		hashes []string
		code   string
		want   int
	}{
		{"ok/first", h, hashes, "abcde-fghij", 0},
		{"ok/middle", h, hashes, "23456-789ab", 1},
		{"ok/last", h, hashes, "mnpqr-stuvw", 3},
		{"ok/typed-loosely", h, hashes, " ZYXWV utsrq ", 2},
		{"ok/duplicates-report-first", h, append(append([]string{}, hashes...), hashes[1]), "23456-789ab", 1},
		{"fail/unknown", h, hashes, "qqqqq-qqqqq", -1},
		{"fail/other-key", other, hashes, "abcde-fghij", -1},
		{"fail/malformed", h, hashes, "abcde-fghi0", -1},
		{"fail/empty-input", h, hashes, "", -1},
		{"fail/no-hashes", h, nil, "abcde-fghij", -1},
		{"fail/raw-hash-as-code", h, hashes, hashes[0], -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.hasher.Match(tc.hashes, tc.code); got != tc.want {
				t.Fatalf("Match(%q) = %d, want %d", tc.code, got, tc.want)
			}
		})
	}
}

func TestRecoveryHasherCopiesKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	h := NewRecoveryHasher(key)
	before := h.Hash("abcde-fghij")
	key[0] ^= 1
	if h.Hash("abcde-fghij") != before {
		t.Fatal("changing the caller's key slice changed the hasher")
	}
}

func TestNewRecoveryHasherEmptyKey(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewRecoveryHasher(nil) did not panic")
		}
	}()
	NewRecoveryHasher(nil)
}

func FuzzNormalizeRecoveryCode(f *testing.F) {
	for _, s := range []string{"abcde-fghij", "ABCDE FGHIJ", "abcde-fghi0", "", "123456", "ａｂｃｄｅ-ｆｇｈｉｊ", "abcde-fghi\u212a", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := NormalizeRecoveryCode(s)
		if !ok {
			if n != "" {
				t.Fatalf("NormalizeRecoveryCode(%q) = %q with ok=false", s, n)
			}
			return
		}
		if len(n) != recoveryCodeLen || strings.Trim(n, recoveryAlphabet) != "" {
			t.Fatalf("NormalizeRecoveryCode(%q) = %q, not normalized", s, n)
		}
		if again, ok := NormalizeRecoveryCode(n); !ok || again != n {
			t.Fatalf("not idempotent: %q → %q → %q, %v", s, n, again, ok)
		}
		if again, ok := NormalizeRecoveryCode(strings.ToUpper(n[:5] + "-" + n[5:])); !ok || again != n {
			t.Fatalf("issued form of %q normalizes to %q, %v", n, again, ok)
		}
		// A valid code must never be routed to TOTP verification.
		if !LooksLikeRecoveryCode(s) {
			t.Fatalf("LooksLikeRecoveryCode(%q) = false for a valid code", s)
		}
	})
}

package limits_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/batonhq/baton/limits"
)

// TestValidateLimitBounds: every accepted limit survives a trip through a
// double (Lua's number type) unchanged; larger ones are refused.
func TestValidateLimitBounds(t *testing.T) {
	for _, n := range []int{limits.Unlimited, 0, 1, 1000, limits.MaxLimit} {
		if err := limits.ValidateLimit(n); err != nil {
			t.Errorf("ValidateLimit(%d): %v", n, err)
		}
		if int(float64(n)) != n {
			t.Errorf("%d does not round-trip through a double", n)
		}
	}
	for _, n := range []int{-2, math.MinInt, limits.MaxLimit + 1, 1 << 53, 1<<53 + 1, math.MaxInt} {
		err := limits.ValidateLimit(n)
		if !errors.Is(err, limits.ErrInvalid) {
			t.Errorf("ValidateLimit(%d) = %v, want ErrInvalid", n, err)
			continue
		}
		if n > 0 && !strings.Contains(err.Error(), "over the maximum of 1000000000") {
			t.Errorf("ValidateLimit(%d): %q does not name the maximum", n, err)
		}
	}
	if _, err := limits.ParseLimit("9223372036854775807"); !errors.Is(err, limits.ErrInvalid) {
		t.Errorf("ParseLimit(MaxInt64): %v, want ErrInvalid", err)
	}
}

// TestQuote: short inputs are quoted whole; long ones by a prefix of at most
// QuoteMax bytes, cut on a character boundary, and their length.
func TestQuote(t *testing.T) {
	if got := limits.Quote("core.http"); got != `"core.http"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("é", 1<<19) // 1 MiB
	got := limits.Quote(long)
	if len(got) > limits.QuoteMax+40 || !strings.HasSuffix(got, "... (1048576 bytes)") || strings.Contains(got, `\x`) {
		t.Errorf("Quote(1 MiB) = %s", got)
	}
}

// TestInvisibleAndSpaceCharacters: refs, pack names and execution IDs refuse
// control, invisible formatting and direction-changing characters, line
// separators, invalid UTF-8 and leading or trailing spaces, naming the
// character and its byte offset.
func TestInvisibleAndSpaceCharacters(t *testing.T) {
	bad := []struct{ text, want string }{
		{"core.ht\u200btp", "invisible formatting character U+200B (ZERO WIDTH SPACE) at byte 7"},
		{"core.\u202ehttp", "invisible formatting character U+202E (RIGHT-TO-LEFT OVERRIDE) at byte 5"},
		{"core.http\u2066", "U+2066 (LEFT-TO-RIGHT ISOLATE) at byte 9"},
		{"\ufeffcore.http", "U+FEFF (ZERO WIDTH NO-BREAK SPACE (BOM)) at byte 0"},
		{"core.h\u00adttp", "U+00AD (SOFT HYPHEN) at byte 6"},
		{"core.\U000E0041x", "invisible formatting character U+E0041 at byte 5"}, // a tag character
		{"core.a\u2028b", "line separator U+2028 (LINE SEPARATOR) at byte 6"},
		{"core.a\nb", "control character U+000A (LINE FEED) at byte 6"},
		{"core.a\x7fb", "control character U+007F at byte 6"},
		{"core.a\u0085b", "control character U+0085 at byte 6"},
		{" core.http", "leading space U+0020 (SPACE) at byte 0"},
		{"core.http ", "trailing space U+0020 (SPACE) at byte 9"},
		{"\u00a0core.http", "leading space U+00A0 (NO-BREAK SPACE) at byte 0"},
		{"core.http\u3000", "trailing space U+3000 (IDEOGRAPHIC SPACE) at byte 9"},
		{"core.a\xffb", "not valid UTF-8: byte 0xff at byte 6"},
		{"core.a\xe2\x80", "not valid UTF-8: byte 0xe2 at byte 6"},
	}
	for _, tc := range bad {
		for what, err := range map[string]error{
			"ValidateRef":         limits.ValidateRef(tc.text),
			"ValidateExecutionID": limits.ValidateExecutionID(tc.text),
			"ValidatePack":        limits.ValidatePack(strings.ReplaceAll(tc.text, "core.", "core_")),
		} {
			want := tc.want
			if what == "ValidatePack" {
				want = strings.SplitN(tc.want, " at byte", 2)[0] // offsets are the same; "." became "_"
			}
			if !errors.Is(err, limits.ErrInvalid) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s(%q) = %v, want an error containing %q", what, tc.text, err, want)
			}
		}
	}
	for _, ok := range []string{"core.http", "core.my action", "café.crème", "日本.語", "a.\uFFFD", "core.a-b_c:d/e"} {
		if err := limits.ValidateRef(ok); err != nil {
			t.Errorf("ValidateRef(%q): %v", ok, err)
		}
		if err := limits.ValidateExecutionID(ok); err != nil {
			t.Errorf("ValidateExecutionID(%q): %v", ok, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("x", limits.MaxRefLength+1)} {
		if err := limits.ValidateExecutionID(id); !errors.Is(err, limits.ErrInvalid) {
			t.Errorf("ValidateExecutionID(%d bytes) = %v", len(id), err)
		}
	}
	if err := limits.ValidateExecutionID(strings.Repeat("x", limits.MaxRefLength)); err != nil {
		t.Error(err)
	}
}

// TestParseScopeQuotesAShortPrefix: an error never echoes a huge input.
func TestParseScopeQuotesAShortPrefix(t *testing.T) {
	for _, text := range []string{strings.Repeat("g", 1<<20), "pack:" + strings.Repeat("p", 1<<20),
		"action:" + strings.Repeat("a", 1<<20), "action:a." + strings.Repeat("\u200b", 200)} {
		_, err := limits.ParseScope(text)
		if !errors.Is(err, limits.ErrInvalid) || len(err.Error()) > 300 {
			t.Errorf("ParseScope(%d bytes): %d-byte error %.300q", len(text), len(err.Error()), err)
		}
	}
}

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

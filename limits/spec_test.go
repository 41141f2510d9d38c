package limits_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/limits"
)

// TestRateSpec: "LIMIT/PER" round-trips through RateSpec; bad specs are
// ErrInvalid naming the field.
func TestRateSpec(t *testing.T) {
	for _, c := range []struct {
		text string
		want limits.Rate
	}{
		{"100/1m", limits.Rate{Limit: 100, Per: time.Minute, Burst: 10}},
		{"5/1s", limits.Rate{Limit: 5, Per: time.Second, Burst: 10}},
		{"1/24h", limits.Rate{Limit: 1, Per: 24 * time.Hour, Burst: 10}},
		{"3/1m30s", limits.Rate{Limit: 3, Per: 90 * time.Second, Burst: 10}},
		{"0/250ms", limits.Rate{Limit: 0, Per: 250 * time.Millisecond, Burst: 10}},
	} {
		got, err := limits.ParseRateSpec(c.text, 10)
		if err != nil || got != c.want {
			t.Errorf("ParseRateSpec(%q) = %+v, %v; want %+v", c.text, got, err, c.want)
			continue
		}
		if s := limits.RateSpec(got); s != c.text {
			t.Errorf("RateSpec(%+v) = %q, want %q", got, s, c.text)
		}
	}
	for _, c := range []struct{ text, field string }{
		{"100", "rate \"100\""},
		{"x/1m", "rate limit \"x\""},
		{"-1/1m", "rate limit -1"},
		{"1000000001/1m", "rate limit 1000000001"},
		{"100/minute", "rate per \"minute\""},
		{"100/0s", "rate per 0s"},
		{"100/1us", "rate per 1µs"},
		{"100/9000h", "rate per 9000h0m0s"},
	} {
		_, err := limits.ParseRateSpec(c.text, 0)
		if !errors.Is(err, limits.ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("ParseRateSpec(%q) = %v, want ErrInvalid naming %s", c.text, err, c.field)
		}
	}
	if _, err := limits.ParseRateSpec("100/1m", -1); err == nil || !strings.Contains(err.Error(), "rate burst -1") {
		t.Errorf("burst -1: %v, want the burst named", err)
	}
}

// TestQuotaSpec: "LIMIT/WINDOW" reads the three windows; bad specs name the
// field.
func TestQuotaSpec(t *testing.T) {
	for text, want := range map[string]limits.Quota{
		"10000/day": {Limit: 10000, Window: limits.Day},
		"60/minute": {Limit: 60, Window: limits.Minute},
		"0/hour":    {Limit: 0, Window: limits.Hour},
	} {
		got, err := limits.ParseQuotaSpec(text)
		if err != nil || got != want {
			t.Errorf("ParseQuotaSpec(%q) = %+v, %v; want %+v", text, got, err, want)
		}
		if got.String() != text {
			t.Errorf("%+v renders as %q, want %q", got, got.String(), text)
		}
	}
	for text, field := range map[string]string{
		"10000":             "quota \"10000\"",
		"ten/day":           "quota limit \"ten\"",
		"-1/day":            "quota limit -1",
		"1000000000001/day": "quota limit 1000000000001",
		"10/week":           "quota window \"week\"",
		"10/1m":             "quota window \"1m\"",
	} {
		_, err := limits.ParseQuotaSpec(text)
		if !errors.Is(err, limits.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("ParseQuotaSpec(%q) = %v, want ErrInvalid naming %s", text, err, field)
		}
	}
}

// TestFormatPer: compact periods parse back to the same duration.
func TestFormatPer(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 250 * time.Millisecond, time.Second, time.Minute,
		90 * time.Second, time.Hour, 24 * time.Hour, 366 * 24 * time.Hour, time.Hour + time.Second} {
		s := limits.FormatPer(d)
		got, err := limits.ParsePer(s)
		if err != nil || got != d {
			t.Errorf("FormatPer(%s) = %q, parses back as %s, %v", d, s, got, err)
		}
	}
	if s := limits.FormatPer(time.Minute); s != "1m" {
		t.Errorf("FormatPer(1m) = %q", s)
	}
}

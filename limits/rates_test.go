package limits_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/limits"
)

// TestRateQuotaValidate: each bad field is named; good values round-trip
// through their stored form.
func TestRateQuotaValidate(t *testing.T) {
	for _, tc := range []struct {
		r     limits.Rate
		field string
	}{
		{limits.Rate{Limit: -1, Per: time.Second}, "rate limit"},
		{limits.Rate{Limit: limits.MaxLimit + 1, Per: time.Second}, "rate limit"},
		{limits.Rate{Limit: 1}, "rate per"},
		{limits.Rate{Limit: 1, Per: -time.Second}, "rate per"},
		{limits.Rate{Limit: 1, Per: time.Microsecond}, "rate per"},
		{limits.Rate{Limit: 1, Per: 400 * 24 * time.Hour}, "rate per"},
		{limits.Rate{Limit: 1, Per: time.Second, Burst: -1}, "rate burst"},
	} {
		err := tc.r.Validate()
		if !errors.Is(err, limits.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want ErrInvalid naming %q", tc.r, err, tc.field)
		}
	}
	for _, tc := range []struct {
		q     limits.Quota
		field string
	}{
		{limits.Quota{Limit: -1, Window: limits.Day}, "quota limit"},
		{limits.Quota{Limit: limits.MaxQuota + 1, Window: limits.Day}, "quota limit"},
		{limits.Quota{Limit: 1}, "quota window"},
		{limits.Quota{Limit: 1, Window: 4}, "quota window"},
	} {
		err := tc.q.Validate()
		if !errors.Is(err, limits.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want ErrInvalid naming %q", tc.q, err, tc.field)
		}
	}
	for _, r := range []limits.Rate{{Limit: 0, Per: time.Millisecond}, {Limit: 100, Per: time.Minute, Burst: 10},
		{Limit: limits.MaxLimit, Per: limits.MaxRatePer, Burst: limits.MaxLimit}} {
		got, err := limits.ParseRate(limits.FormatRate(r))
		if err != nil || got != r {
			t.Errorf("rate %v: read back %v, %v", r, got, err)
		}
	}
	for _, w := range []limits.Window{limits.Minute, limits.Hour, limits.Day} {
		q := limits.Quota{Limit: 10000, Window: w}
		got, err := limits.ParseQuota(limits.FormatQuota(q))
		if err != nil || got != q {
			t.Errorf("quota %v: read back %v, %v", q, got, err)
		}
		var back limits.Window
		text, err := w.MarshalText()
		if err != nil || back.UnmarshalText(text) != nil || back != w {
			t.Errorf("window %v: text %q, back %v", w, text, back)
		}
	}
	if _, err := limits.ParseWindow("week"); !errors.Is(err, limits.ErrInvalid) || !strings.Contains(err.Error(), "quota window") {
		t.Errorf("ParseWindow(week): %v", err)
	}
	day := time.Date(2026, 3, 7, 13, 45, 10, 0, time.UTC)
	if got := limits.Day.Start(day); !got.Equal(time.Date(2026, 3, 7, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Day.Start: %v", got)
	}
	if got := limits.Hour.Start(day); !got.Equal(time.Date(2026, 3, 7, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("Hour.Start: %v", got)
	}
}

// TestResolvePerKind: each kind of policy resolves on its own.
func TestResolvePerKind(t *testing.T) {
	p := limits.Policies{
		Limits: map[limits.Scope]int{limits.Action("a.x"): 3},
		Rates:  map[limits.Scope]limits.Rate{limits.Global(): {Limit: 1, Per: time.Second}},
		Quotas: map[limits.Scope]limits.Quota{limits.Pack("a"): {Limit: 5, Window: limits.Day}},
	}
	if _, src, _ := p.Resolve("a.x"); src != limits.Action("a.x") {
		t.Errorf("limit from %v", src)
	}
	if _, src, ok := p.ResolveRate("a.x"); !ok || src != limits.Global() {
		t.Errorf("rate from %v", src)
	}
	if _, src, ok := p.ResolveQuota("a.x"); !ok || src != limits.Pack("a") {
		t.Errorf("quota from %v", src)
	}
	if _, _, ok := p.ResolveQuota("b.x"); ok {
		t.Error("a pack quota applied to another pack")
	}
}

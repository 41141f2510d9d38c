package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// TestQuotaErrorIs429: the shared error path (fail, used by every handler)
// answers a quota refusal from the core with 429 quota_exceeded, a
// Retry-After in whole seconds until the window resets, and the quota in
// the body. The refusal is a real one: a quota of 1 per minute, met.
func TestQuotaErrorIs429(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	c, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := redistest.Context(t)
	if err := c.SetQuota(ctx, limits.Pack("sms"), limits.Quota{Limit: 1, Window: limits.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnqueueAndWait(ctx, "sms.send", "e1"); err != nil {
		t.Fatal(err)
	}
	_, err = c.EnqueueAndWait(ctx, "sms.send", "e2")
	var qe *coordinator.QuotaError
	if !errors.As(err, &qe) {
		t.Fatalf("e2: %v, want a *QuotaError", err)
	}
	a := &api{c: c, log: slog.New(slog.DiscardHandler)}
	rec := httptest.NewRecorder()
	a.fail(rec, httptest.NewRequest("POST", "/x", nil), err)
	if rec.Code != 429 {
		t.Fatalf("status %d, want 429; body %s", rec.Code, rec.Body)
	}
	secs, perr := strconv.Atoi(rec.Header().Get("Retry-After"))
	if perr != nil || secs < 1 || secs > 60 {
		t.Fatalf("Retry-After %q: want 1 to 60 seconds (a minute window)", rec.Header().Get("Retry-After"))
	}
	var body QuotaExceeded
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Code != "quota_exceeded" || body.Action != "sms.send" || body.Source != "pack:sms" ||
		body.Quota == nil || *body.Quota != (Quota{Limit: 1, Window: "minute"}) || !body.Reset.Equal(qe.RetryAt) ||
		body.Error == "" {
		t.Fatalf("body %s", rec.Body)
	}

	// The window's end is rounded up; one already past asks for a second.
	for _, c := range []struct {
		left time.Duration
		want string
	}{{1500 * time.Millisecond, "2"}, {-time.Second, "1"}, {0, "1"}, {time.Hour, "3600"}} {
		rec := httptest.NewRecorder()
		now := time.Now()
		writeQuotaError(rec, &coordinator.QuotaError{Action: "a.b", Quota: limits.Quota{Limit: 1, Window: limits.Hour},
			Source: "global", RetryAt: now.Add(c.left)}, now)
		if got := rec.Header().Get("Retry-After"); got != c.want || rec.Code != 429 {
			t.Errorf("%s left: %d Retry-After %q, want 429 %q", c.left, rec.Code, got, c.want)
		}
	}
}

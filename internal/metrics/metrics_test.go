package metrics

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// fakeSource serves fixed stats; actions come two per page.
type fakeSource struct {
	stats map[string]coordinator.QueueStats
	refs  []string
	fail  bool
}

func (f *fakeSource) Actions(_ context.Context, cursor uint64, _ int64) ([]string, uint64, error) {
	if f.fail {
		return nil, 0, errors.New("redis down")
	}
	end := min(int(cursor)+2, len(f.refs))
	next := uint64(end)
	if end == len(f.refs) {
		next = 0
	}
	// Repeat one ref, as SSCAN may.
	return append(f.refs[cursor:end:end], f.refs[0]), next, nil
}

func (f *fakeSource) QueueStats(_ context.Context, action string) (coordinator.QueueStats, error) {
	return f.stats[action], nil
}

func TestCollector(t *testing.T) {
	buckets := make([]int64, len(coordinator.WaitBuckets))
	buckets[0], buckets[2] = 3, 2 // three waits <= 1ms, two in (5ms, 10ms]
	src := &fakeSource{
		refs: []string{"core.http", "core.local", "web.fetch"},
		stats: map[string]coordinator.QueueStats{
			"core.http": {Action: "core.http", QueueLength: 4, ActiveCount: 2, MaxConcurrent: 2, TotalAdmitted: 6,
				TotalTimedOut: 1, OldestEnqueuedAt: time.Now().Add(-time.Minute),
				Wait: coordinator.WaitHistogram{Buckets: buckets, Over: 1, Count: 6, Sum: 61 * time.Second}},
			"core.local": {Action: "core.local", MaxConcurrent: -1},
			"web.fetch":  {Action: "web.fetch", MaxConcurrent: 1},
		},
	}
	c := NewCollector(src, slog.New(slog.DiscardHandler))
	want := `
# HELP baton_wait_seconds Time from enqueue to grant (Redis clock).
# TYPE baton_wait_seconds histogram
baton_wait_seconds_bucket{action="core.http",le="0.001"} 3
baton_wait_seconds_bucket{action="core.http",le="0.005"} 3
baton_wait_seconds_bucket{action="core.http",le="0.01"} 5
baton_wait_seconds_bucket{action="core.http",le="0.05"} 5
baton_wait_seconds_bucket{action="core.http",le="0.1"} 5
baton_wait_seconds_bucket{action="core.http",le="0.5"} 5
baton_wait_seconds_bucket{action="core.http",le="1"} 5
baton_wait_seconds_bucket{action="core.http",le="5"} 5
baton_wait_seconds_bucket{action="core.http",le="10"} 5
baton_wait_seconds_bucket{action="core.http",le="60"} 5
baton_wait_seconds_bucket{action="core.http",le="+Inf"} 6
baton_wait_seconds_sum{action="core.http"} 61
baton_wait_seconds_count{action="core.http"} 6
baton_wait_seconds_bucket{action="core.local",le="0.001"} 0
baton_wait_seconds_bucket{action="core.local",le="0.005"} 0
baton_wait_seconds_bucket{action="core.local",le="0.01"} 0
baton_wait_seconds_bucket{action="core.local",le="0.05"} 0
baton_wait_seconds_bucket{action="core.local",le="0.1"} 0
baton_wait_seconds_bucket{action="core.local",le="0.5"} 0
baton_wait_seconds_bucket{action="core.local",le="1"} 0
baton_wait_seconds_bucket{action="core.local",le="5"} 0
baton_wait_seconds_bucket{action="core.local",le="10"} 0
baton_wait_seconds_bucket{action="core.local",le="60"} 0
baton_wait_seconds_bucket{action="core.local",le="+Inf"} 0
baton_wait_seconds_sum{action="core.local"} 0
baton_wait_seconds_count{action="core.local"} 0
baton_wait_seconds_bucket{action="web.fetch",le="0.001"} 0
baton_wait_seconds_bucket{action="web.fetch",le="0.005"} 0
baton_wait_seconds_bucket{action="web.fetch",le="0.01"} 0
baton_wait_seconds_bucket{action="web.fetch",le="0.05"} 0
baton_wait_seconds_bucket{action="web.fetch",le="0.1"} 0
baton_wait_seconds_bucket{action="web.fetch",le="0.5"} 0
baton_wait_seconds_bucket{action="web.fetch",le="1"} 0
baton_wait_seconds_bucket{action="web.fetch",le="5"} 0
baton_wait_seconds_bucket{action="web.fetch",le="10"} 0
baton_wait_seconds_bucket{action="web.fetch",le="60"} 0
baton_wait_seconds_bucket{action="web.fetch",le="+Inf"} 0
baton_wait_seconds_sum{action="web.fetch"} 0
baton_wait_seconds_count{action="web.fetch"} 0
# HELP baton_limit Concurrency limit in force; -1 is unlimited.
# TYPE baton_limit gauge
baton_limit{action="core.http"} 2
baton_limit{action="core.local"} -1
baton_limit{action="web.fetch"} 1
# HELP baton_timeouts_total Waiters that reached the queue timeout.
# TYPE baton_timeouts_total counter
baton_timeouts_total{action="core.http"} 1
baton_timeouts_total{action="core.local"} 0
baton_timeouts_total{action="web.fetch"} 0
# HELP baton_redis_up 1 when Redis answered every read of the last scrape, else 0.
# TYPE baton_redis_up gauge
baton_redis_up 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"baton_wait_seconds", "baton_limit", "baton_timeouts_total", "baton_redis_up"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "baton_queue_length"); n != 3 {
		t.Fatalf("%d queue_length series, want 3 (one per action, duplicates dropped)", n)
	}
	src.fail = true
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP baton_redis_up 1 when Redis answered every read of the last scrape, else 0.
# TYPE baton_redis_up gauge
baton_redis_up 0
`), "baton_redis_up"); err != nil {
		t.Fatal(err)
	}
}

// TestMalformedMembersAreSkipped: members of the actions set that are not
// action refs are left out and logged once each; baton_redis_up stays 1.
func TestMalformedMembersAreSkipped(t *testing.T) {
	src := &fakeSource{
		refs:  []string{"nodot", "core.http", "core.\u202ebad", "x.y "},
		stats: map[string]coordinator.QueueStats{"core.http": {Action: "core.http", MaxConcurrent: 2}},
	}
	var logs bytes.Buffer
	c := NewCollector(src, slog.New(slog.NewTextHandler(&logs, nil)))
	for range 2 {
		if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP baton_redis_up 1 when Redis answered every read of the last scrape, else 0.
# TYPE baton_redis_up gauge
baton_redis_up 1
# HELP baton_limit Concurrency limit in force; -1 is unlimited.
# TYPE baton_limit gauge
baton_limit{action="core.http"} 2
`), "baton_redis_up", "baton_limit"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "skipping a malformed member"); n != 3 {
		t.Fatalf("%d log lines for 3 malformed members over 2 scrapes, want 3:\n%s", n, logs.String())
	}
}

// TestRateAndQuotaMetrics: the throttle and quota numbers of QueueStats are
// exported per action; the rate and quota gauges only where one applies.
func TestRateAndQuotaMetrics(t *testing.T) {
	src := &fakeSource{
		refs: []string{"slack.post", "core.local"},
		stats: map[string]coordinator.QueueStats{
			"slack.post": {Action: "slack.post", MaxConcurrent: -1,
				Rate: limits.Rate{Limit: 120, Per: time.Minute, Burst: 10}, RateSource: "pack:slack",
				ThrottledUntil: time.Now().Add(time.Hour),
				Quota:          limits.Quota{Limit: 10000, Window: limits.Day}, QuotaSource: "action:slack.post", QuotaUsed: 42,
				TotalThrottled: 7, TotalQuotaRejected: 3},
			"core.local": {Action: "core.local", MaxConcurrent: -1, RateSource: "default", QuotaSource: "default"},
		},
	}
	c := NewCollector(src, slog.New(slog.DiscardHandler))
	want := `
# HELP baton_throttled_total Executions that waited at the head of the queue for a rate token (each counted once).
# TYPE baton_throttled_total counter
baton_throttled_total{action="core.local"} 0
baton_throttled_total{action="slack.post"} 7
# HELP baton_rate_limit_per_second Rate in force, in admissions per second (limit/per); absent when no rate applies.
# TYPE baton_rate_limit_per_second gauge
baton_rate_limit_per_second{action="slack.post"} 2
# HELP baton_rate_burst Burst of the rate in force; absent when no rate applies.
# TYPE baton_rate_burst gauge
baton_rate_burst{action="slack.post"} 10
# HELP baton_quota_limit Quota in force: executions accepted per window; absent when no quota applies.
# TYPE baton_quota_limit gauge
baton_quota_limit{action="slack.post",window="day"} 10000
# HELP baton_quota_used Executions accepted in the current quota window (admitted, and waiting with a reservation); absent when no quota applies.
# TYPE baton_quota_used gauge
baton_quota_used{action="slack.post"} 42
# HELP baton_quota_rejections_total Requests refused because the quota of the window was used up.
# TYPE baton_quota_rejections_total counter
baton_quota_rejections_total{action="core.local"} 0
baton_quota_rejections_total{action="slack.post"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "baton_throttled_total", "baton_rate_limit_per_second",
		"baton_rate_burst", "baton_quota_limit", "baton_quota_used", "baton_quota_rejections_total"); err != nil {
		t.Fatal(err)
	}
	// The head waits an hour for its token; the idle action waits for none.
	now := time.Now()
	if got := throttledSeconds(src.stats["slack.post"], src.stats["slack.post"].ThrottledUntil.Add(-time.Hour)); got != 3600 {
		t.Fatalf("throttled seconds an hour before the token: %v", got)
	}
	if got := throttledSeconds(src.stats["core.local"], now); got != 0 {
		t.Fatalf("throttled seconds with no throttle: %v", got)
	}
	if got := throttledSeconds(coordinator.QueueStats{ThrottledUntil: now.Add(-time.Second)}, now); got != 0 {
		t.Fatalf("throttled seconds after the token is due: %v", got)
	}
	if n := testutil.CollectAndCount(c, "baton_throttled_seconds"); n != 2 {
		t.Fatalf("%d baton_throttled_seconds series, want 2", n)
	}
}

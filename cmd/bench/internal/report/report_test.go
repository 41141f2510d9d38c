package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/workload"
)

func TestNewLoadAttributesRoundTrips(t *testing.T) {
	// 10 admissions: 6 fast (one enqueue each), 4 queued (enqueue, and a
	// BLPOP that brings the grant's token, plus one empty BLPOP round), 10
	// releases, plus 2 heartbeats and 2 sweep-index ZADDs.
	c := redisstats.Counts{
		Commands: map[string]int64{
			"script:enqueue": 10, "blpop": 8, "blpop:token": 4, "script:release": 10,
			"script:renew": 2, "zadd": 2,
		},
		RoundTrips: 32,
	}
	s := metrics.Summary{Admitted: 10, Planned: 10, Finished: 10, HandoffP99: 1500 * time.Microsecond}
	l := NewLoad("baton", s, c, redisstats.CommandStats{"evalsha": 32, "hget": 68}, nil)
	if l.FastAdmissions != 6 {
		t.Errorf("fast %d, want 6", l.FastAdmissions)
	}
	// Queued: 4 enqueues + 8 BLPOPs + 2 renews + 2 ZADDs = 16 over 4.
	if l.RoundTripsPerQueuedAdmission != 4 {
		t.Errorf("per queued %v, want 4", l.RoundTripsPerQueuedAdmission)
	}
	if l.RedisCmdsPerAdmission != 3.2 || l.RoundTripsPerAdmission != 3.2 {
		t.Errorf("per admission %v cmds, %v round trips", l.RedisCmdsPerAdmission, l.RoundTripsPerAdmission)
	}
	if l.RedisCallsPerAdmission != 10 {
		t.Errorf("calls incl scripts %v, want 10", l.RedisCallsPerAdmission)
	}
	if l.HandoffP99Ms != 1.5 {
		t.Errorf("handoff p99 %v ms", l.HandoffP99Ms)
	}
}

func TestJSONHasTheIssueFields(t *testing.T) {
	wl := workload.Workload{Actions: 8, Limit: 4, Executions: 500, Clients: 64, Processes: 1, Work: workload.Work{Mean: 2 * time.Millisecond}}
	r := &Report{Mode: "throughput", Target: "miniredis", Miniredis: true, Workload: &wl,
		Load: NewLoad("baton", metrics.Summary{}, redisstats.Counts{}, nil, nil)}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"admitted_per_s", "wait_p50_ms", "wait_p99_ms", "handoff_p50_ms", "handoff_p99_ms",
		"max_concurrency_seen", "limit_violations", "fifo_inversions", "lost", "redis_cmds_per_admission", "wall_s", "workload"} {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %s", f)
		}
	}
	if w := m["workload"].(map[string]any); w["work"] != "2ms" {
		t.Errorf("workload %v", w)
	}
	buf.Reset()
	if err := r.WriteTable(&buf); err != nil || !strings.Contains(buf.String(), "admitted_per_s") {
		t.Errorf("table %q, %v", buf.String(), err)
	}
}

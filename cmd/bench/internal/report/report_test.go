package report

import (
	"bytes"
	"encoding/json"
	"math"
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

func TestRedisCPUPerAdmission(t *testing.T) {
	l := NewLoad("baton", metrics.Summary{Admitted: 400, Planned: 400, Finished: 400}, redisstats.Counts{}, nil, nil)
	l.SetRedisCPU(50_000) // 50 ms of Redis CPU for 400 admissions
	if l.RedisCPUUsPerAdmission != 125 || l.RedisServerCPUBoundAdmissionsPerS != 8000 {
		t.Errorf("cpu %v µs/admission, bound %v/s; want 125 and 8000", l.RedisCPUUsPerAdmission, l.RedisServerCPUBoundAdmissionsPerS)
	}
	r := &Report{Mode: "throughput", Target: "Redis 7.0.15 at 127.0.0.1:1", Load: l}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["redis_cpu_us_per_admission"] != 125.0 || m["redis_server_cpu_bound_admissions_per_s"] != 8000.0 {
		t.Errorf("JSON %v", m)
	}
	buf.Reset()
	if err := r.WriteTable(&buf); err != nil || !hasRow(buf.String(), "redis_cpu_us_per_admission", "125.0 (one core: 8000/s)") {
		t.Errorf("table %q, %v", buf.String(), err)
	}

	// Unknown (miniredis, or INFO cpu unreadable): the fields are left out.
	unknown := NewLoad("baton", metrics.Summary{Admitted: 400}, redisstats.Counts{}, nil, nil)
	unknown.SetRedisCPU(0)
	buf.Reset()
	(&Report{Mode: "throughput", Load: unknown}).WriteJSON(&buf)
	if strings.Contains(buf.String(), "redis_cpu_us_per_admission") || strings.Contains(buf.String(), "redis_server_cpu_bound") {
		t.Errorf("unknown CPU time in the JSON: %s", buf.String())
	}
}

// hasRow reports whether table has a line of name then value, however padded.
func hasRow(table, name, value string) bool {
	for _, line := range strings.Split(table, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && strings.TrimSpace(rest) == value {
			return true
		}
	}
	return false
}

func TestQueuedRoundTripsWithPipelinedScripts(t *testing.T) {
	// The same run as above, but the 22 script calls went out in 12 round
	// trips (pipelines): each is charged 12/22 of a round trip.
	c := redisstats.Counts{
		Commands: map[string]int64{
			"script:enqueue": 10, "blpop": 8, "blpop:token": 4, "script:release": 10,
			"script:renew": 2, "zadd": 2,
		},
		RoundTrips: 22,
	}
	fast, per := splitAdmissions(10, c)
	want := (8 + 2 + 6*12.0/22) / 4
	if fast != 6 || math.Abs(per-want) > 1e-9 {
		t.Errorf("fast %d, per queued %v; want 6 and %v", fast, per, want)
	}
}

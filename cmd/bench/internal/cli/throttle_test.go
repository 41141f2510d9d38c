package cli

import (
	"testing"

	"github.com/batonhq/baton/internal/redistest"
)

// checkThrottle checks a throttle run's promises: every execution of both
// phases admitted, the bound held over every interval, FIFO kept, and the
// throttled phase no shorter than the rate allows: each action's
// executions-max(burst, 1) admissions after its first need
// (executions-max(burst, 1)) x per/limit (whether anything waited for a
// token depends on the machine's speed, so it is not checked).
func checkThrottle(t *testing.T, code int, m map[string]any, planned, minThrottledS float64) {
	t.Helper()
	if code != ExitOK {
		t.Fatalf("exit %d, failed %v", code, m["failed"])
	}
	th, ok := m["throttle"].(map[string]any)
	if !ok {
		t.Fatalf("no throttle figures: %v", m)
	}
	if num(t, th, "excess_admissions") != 0 || num(t, th, "fifo_inversions") != 0 {
		t.Errorf("excess %v, inversions %v", th["excess_admissions"], th["fifo_inversions"])
	}
	phases, _ := th["phases"].([]any)
	if len(phases) != 2 {
		t.Fatalf("phases: %v", th["phases"])
	}
	for i, p := range phases {
		ph := p.(map[string]any)
		if num(t, ph, "admissions") != planned {
			t.Errorf("phase %v: %v admissions, want %v", ph["phase"], ph["admissions"], planned)
		}
		if i == 0 && num(t, ph, "throttled") != 0 {
			t.Errorf("phase %v: throttled %v, want 0 without a rate", ph["phase"], ph["throttled"])
		}
		if i == 1 && num(t, ph, "wall_s") < minThrottledS {
			t.Errorf("phase %v took %vs, under the rate's minimum of %vs", ph["phase"], ph["wall_s"], minThrottledS)
		}
	}
	if num(t, th, "gaps") == 0 || num(t, th, "expected_spacing_ms") != 20 {
		t.Errorf("spacing: %v gaps, expected %v ms", th["gaps"], th["expected_spacing_ms"])
	}
}

// checkQuota checks a quota run: some requests accepted and some refused,
// no window over the quota or refusing early, and the core's own count of
// refusals agrees with the clients'.
func checkQuota(t *testing.T, code int, m map[string]any) {
	t.Helper()
	if code != ExitOK {
		t.Fatalf("exit %d, failed %v", code, m["failed"])
	}
	q, ok := m["quota"].(map[string]any)
	if !ok {
		t.Fatalf("no quota figures: %v", m)
	}
	if num(t, q, "windows_over") != 0 || num(t, q, "windows_refused_early") != 0 || num(t, q, "windows_exact") < 2 {
		t.Errorf("windows: %v", q)
	}
	if num(t, q, "rejected") == 0 || num(t, q, "rejected") != num(t, q, "quota_rejected_counted") {
		t.Errorf("rejected %v, counted by the core %v", q["rejected"], q["quota_rejected_counted"])
	}
}

func TestThrottleAndQuotaOnMiniredis(t *testing.T) {
	code, m := bench(t, "--mode", "throttle", "--actions", "2", "--limit", "2", "--executions", "30", "--clients", "8",
		"--work", "1ms", "--rate", "50/1s", "--burst", "3")
	checkThrottle(t, code, m, 60, 27*0.020)
	code, m = bench(t, "--mode", "quota", "--actions", "2", "--clients", "6", "--work", "1ms", "--quota", "15/hour", "--duration", "1s")
	checkQuota(t, code, m)
}

func TestThrottleAndQuotaOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	url := "redis://" + srv.Addr
	code, m := bench(t, "--redis", url, "--mode", "throttle", "--actions", "2", "--limit", "2", "--executions", "40",
		"--clients", "8", "--work", "1ms", "--rate", "50/1s", "--burst", "3")
	checkThrottle(t, code, m, 80, 37*0.020)
	code, m = bench(t, "--redis", url, "--mode", "quota", "--actions", "2", "--clients", "6", "--work", "1ms",
		"--quota", "15/hour", "--duration", "1s")
	checkQuota(t, code, m)
}

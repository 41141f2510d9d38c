package ratecheck

import (
	"testing"
	"time"
)

// at builds admissions at the given millisecond offsets, tokens and seqs in
// that order.
func at(ms ...int) []Admission {
	base := time.UnixMilli(1_700_000_000_000)
	out := make([]Admission, len(ms))
	for i, m := range ms {
		out[i] = Admission{Token: int64(i + 1), Seq: int64(i + 1), At: base.Add(time.Duration(m) * time.Millisecond)}
	}
	return out
}

// TestExcess: admissions exactly on the bound pass; one more anywhere is
// found, however the window that holds it is placed.
func TestExcess(t *testing.T) {
	b := Bound{Limit: 10, Per: 100 * time.Millisecond, Burst: 3} // 1 per 10ms, bursts of 3
	cases := []struct {
		name  string
		ms    []int
		worst int
	}{
		{"empty", nil, 0},
		{"spaced exactly", []int{0, 10, 20, 30, 40, 50}, 0},
		{"a burst of 3 then spaced", []int{0, 0, 0, 10, 20, 30}, 0},
		{"a burst of 4", []int{0, 0, 0, 0}, 1},
		{"burst refilled too early", []int{0, 0, 0, 10, 20, 30, 35, 35}, 2}, // 8 in 35ms: at most 3.5+3
		{"two over in the middle", []int{0, 10, 20, 21, 22, 23, 24, 50}, 2},
		{"idle then burst", []int{0, 10, 500, 500, 500, 510}, 0},
	}
	for _, c := range cases {
		worst, over := Excess(at(c.ms...), b)
		if worst != c.worst || (worst > 0) != (over > 0) {
			t.Errorf("%s: worst %d (over %d), want %d", c.name, worst, over, c.worst)
		}
	}
	// Slack widens every interval: 1ms slack at 1/10ms allows a tenth more,
	// which rounds nothing up.
	if worst, _ := Excess(at(0, 9, 18, 27), Bound{Limit: 10, Per: 100 * time.Millisecond, Burst: 1, Slack: time.Millisecond}); worst != 1 {
		t.Errorf("9ms spacing under a 10ms bound with 1ms slack: worst %d, want 1", worst)
	}
	if worst, _ := Excess(at(0, 10, 20, 29), Bound{Limit: 10, Per: 100 * time.Millisecond, Burst: 1, Slack: time.Millisecond}); worst != 0 {
		t.Errorf("one gap a millisecond short with 1ms slack: worst %d, want 0", worst)
	}
}

func TestSpacingsAndFIFO(t *testing.T) {
	s := Spacings(at(0, 0, 0, 10, 20, 30, 40), 3)
	if s.N != 4 || s.Mean != 10*time.Millisecond || s.P50 != 10*time.Millisecond {
		t.Fatalf("spacings: %+v", s)
	}
	a := at(0, 10, 20, 30)
	if n := FIFOInversions(a); n != 0 {
		t.Fatalf("in order: %d inversions", n)
	}
	a[2].Seq, a[3].Seq = 4, 3 // the fourth enqueued was admitted third
	if n := FIFOInversions(a); n != 1 {
		t.Fatalf("one swap: %d inversions, want 1", n)
	}
}

func TestQuotaWindows(t *testing.T) {
	w0, w1 := time.Unix(600, 0), time.Unix(660, 0)
	var ds []Decision
	add := func(action string, w time.Time, accepted, rejected int) {
		for range accepted {
			ds = append(ds, Decision{Action: action, Window: w, Accepted: true})
		}
		for range rejected {
			ds = append(ds, Decision{Action: action, Window: w})
		}
	}
	add("a.x", w0, 5, 7) // exact
	add("a.x", w1, 3, 0) // short: the run ended
	add("a.y", w0, 6, 0) // over
	add("a.y", w1, 4, 1) // refused early
	ws := Windows(ds)
	if len(ws) != 4 || ws[0].Action != "a.x" || !ws[0].Start.Equal(w0) || ws[0].Accepted != 5 || ws[0].Rejected != 7 {
		t.Fatalf("windows: %+v", ws)
	}
	if v := Judge(ws, 5); v != (QuotaVerdict{Exact: 1, Over: 1, Early: 1, Short: 1}) {
		t.Fatalf("verdict: %+v", v)
	}
}

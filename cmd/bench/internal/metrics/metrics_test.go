package metrics

import (
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

func TestPercentileNearestRank(t *testing.T) {
	var v []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		v = append(v, time.Duration(i)*time.Millisecond)
	}
	cases := []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{100, 100 * time.Millisecond},
		{1, 1 * time.Millisecond},
		{0.5, 1 * time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(v, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if v[0] != 100*time.Millisecond {
		t.Error("Percentile sorted its input in place")
	}
	if got := Percentile(nil, 99); got != 0 {
		t.Errorf("empty: %v", got)
	}
	// Small sets: p99 of 3 values is the largest; p50 of 4 values is the 2nd.
	if got := Percentile([]time.Duration{3, 1, 2}, 99); got != 3 {
		t.Errorf("p99 of 3 = %v", got)
	}
	if got := Percentile([]time.Duration{4, 1, 3, 2}, 50); got != 2 {
		t.Errorf("p50 of 4 = %v", got)
	}
}

func TestFIFOInversions(t *testing.T) {
	mk := func(action string, seq, token int64) Execution {
		return Execution{Action: action, Submit: 1, Start: 2, End: 3, Seq: seq, Token: token}
	}
	cases := []struct {
		name  string
		execs []Execution
		want  int64
	}{
		{"in order", []Execution{mk("a", 1, 1), mk("a", 2, 2), mk("a", 3, 3)}, 0},
		{"one swap", []Execution{mk("a", 1, 1), mk("a", 3, 2), mk("a", 2, 3)}, 1},
		// Admitted 3,2,1: every pair is inverted.
		{"reversed", []Execution{mk("a", 1, 3), mk("a", 2, 2), mk("a", 3, 1)}, 3},
		// The last-submitted admitted first jumps 3 earlier ones.
		{"jump the queue", []Execution{mk("a", 1, 2), mk("a", 2, 3), mk("a", 3, 4), mk("a", 4, 1)}, 3},
		// Pairs are counted within an action only.
		{"per action", []Execution{mk("a", 1, 1), mk("b", 2, 1), mk("a", 3, 2), mk("b", 1, 2)}, 1},
		// Executions never admitted take no part.
		{"not started", []Execution{mk("a", 1, 2), {Action: "a", Submit: 1, Seq: 0}, mk("a", 2, 3)}, 0},
	}
	for _, c := range cases {
		if got := FIFOInversions(c.execs); got != c.want {
			t.Errorf("%s: %d inversions, want %d", c.name, got, c.want)
		}
	}
}

func TestCountInversionsMatchesBruteForce(t *testing.T) {
	s := []int64{5, 3, 9, 1, 1, 8, 2, 7, 6, 4, 0, 3}
	var want int64
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[i] > s[j] {
				want++
			}
		}
	}
	if got := countInversions(s); got != want {
		t.Errorf("got %d, want %d", got, want)
	}
	if s[0] != 5 {
		t.Error("countInversions changed its input")
	}
}

func TestHandoffs(t *testing.T) {
	execs := []Execution{
		// Fast path: no release between its submit and its start.
		{Action: "a", ID: "x", Submit: 0*ms + 1, Start: 1 * ms, End: 10 * ms},
		{Action: "a", ID: "y", Submit: 1 * ms, Start: 2 * ms, End: 12 * ms},
		// Waited: submitted at 3, releases at 10 and 12; started at 13 -> the
		// latest release before it is 12, handoff 1ms.
		{Action: "a", ID: "z", Submit: 3 * ms, Start: 13 * ms, End: 20 * ms},
		// Waited: submitted at 4, started at 11 after the release at 10.
		{Action: "a", ID: "w", Submit: 4 * ms, Start: 11 * ms, End: 30 * ms},
		// Other action: its releases do not count for "a"; submitted after
		// the release at 12 of "a", but "b" has no release before its start.
		{Action: "b", ID: "v", Submit: 5 * ms, Start: 25 * ms, End: 26 * ms},
		// Submitted after the latest release (20) before its start: fast path.
		{Action: "a", ID: "u", Submit: 21 * ms, Start: 22 * ms, End: 23 * ms},
		// Never started: ignored.
		{Action: "a", ID: "t", Submit: 5 * ms},
	}
	got := Handoffs(execs)
	want := map[time.Duration]int{time.Millisecond: 2}
	if len(got) != 2 {
		t.Fatalf("handoffs %v, want two of 1ms", got)
	}
	for _, d := range got {
		if want[d] == 0 {
			t.Fatalf("handoffs %v, want two of 1ms", got)
		}
	}
}

func TestHandoffsPicksLatestRelease(t *testing.T) {
	execs := []Execution{
		{Action: "a", Submit: 1, Start: 2, End: 5 * ms},
		{Action: "a", Submit: 1, Start: 3, End: 7 * ms},
		{Action: "a", Submit: 4 * ms, Start: 9 * ms, End: 11 * ms},
	}
	got := Handoffs(execs)
	if len(got) != 1 || got[0] != 2*time.Millisecond {
		t.Fatalf("got %v, want [2ms] (release at 7ms, start at 9ms)", got)
	}
}

func TestTrackConcurrency(t *testing.T) {
	execs := []Execution{
		{Action: "a", Start: 1, End: 10},
		{Action: "a", Start: 2, End: 5},
		{Action: "a", Start: 5, End: 8}, // starts as the previous ends: no overlap
		{Action: "a", Start: 6, End: 9}, // 3 running: 1, 3 and this
		{Action: "b", Start: 1, End: 2},
		{Action: "a", Submit: 1}, // never started
	}
	got := TrackConcurrency(execs, 2, 0)
	if a := got["a"]; a.Max != 3 || a.Violations != 1 {
		t.Errorf("a: %+v, want max 3 with 1 violation", a)
	}
	if b := got["b"]; b.Max != 1 || b.Violations != 0 {
		t.Errorf("b: %+v", b)
	}
	if got := TrackConcurrency(execs, -1, 0)["a"]; got.Violations != 0 {
		t.Errorf("unlimited: %+v", got)
	}
}

func TestTrackConcurrencyOpenEnd(t *testing.T) {
	// A killed holder (no End) counts until openEnd.
	execs := []Execution{
		{Action: "a", Start: 1},
		{Action: "a", Start: 5, End: 6},
		{Action: "a", Start: 20, End: 21},
	}
	if got := TrackConcurrency(execs, 1, 10)["a"]; got.Max != 2 || got.Violations != 1 {
		t.Errorf("open until 10: %+v, want max 2, 1 violation", got)
	}
	if got := TrackConcurrency(execs, 1, 3)["a"]; got.Max != 1 || got.Violations != 0 {
		t.Errorf("open until 3: %+v, want max 1", got)
	}
}

func TestSummarize(t *testing.T) {
	execs := []Execution{
		{Action: "a", Submit: 1 * ms, Start: 1 * ms, End: 3 * ms, Seq: 1, Token: 1},
		{Action: "a", Submit: 1 * ms, Start: 4 * ms, End: 6 * ms, Seq: 2, Token: 2},
		{Action: "a", Submit: 2 * ms, Start: 7 * ms, End: 1001 * ms, Seq: 3, Token: 3},
		{Action: "a", Submit: 2 * ms, Err: "boom"},
	}
	s := Summarize(execs, 5, 1, 0)
	if s.Submitted != 4 || s.Admitted != 3 || s.Finished != 3 || s.Lost != 2 {
		t.Errorf("counts %+v", s)
	}
	if s.Wall != time.Second || s.AdmittedPerS != 3 {
		t.Errorf("wall %v rate %v", s.Wall, s.AdmittedPerS)
	}
	if s.Handoffs != 2 || s.HandoffP50 != time.Millisecond || s.HandoffP99 != time.Millisecond {
		t.Errorf("handoffs %d p50 %v p99 %v", s.Handoffs, s.HandoffP50, s.HandoffP99)
	}
	if s.WaitP50 != 3*time.Millisecond || s.WaitP99 != 5*time.Millisecond {
		t.Errorf("waits p50 %v p99 %v", s.WaitP50, s.WaitP99)
	}
	if s.MaxConcurrency != 1 || s.LimitViolations != 0 || s.FIFOInversions != 0 {
		t.Errorf("promises %+v", s)
	}
}

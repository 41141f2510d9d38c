package metrics

import "time"

// Summary is every figure the report derives from the events of one run.
type Summary struct {
	// Planned is how many executions the clients were to run.
	Planned int
	// Submitted, Admitted and Finished count executions that reached each event.
	Submitted, Admitted, Finished int
	// Lost counts planned executions that never finished.
	Lost int
	// Wall is from the first submit to the last end.
	Wall time.Duration
	// AdmittedPerS is Admitted / Wall.
	AdmittedPerS float64
	// WaitP50 and WaitP99 are percentiles of submit -> start.
	WaitP50, WaitP99 time.Duration
	// Handoffs counts admissions that waited for a release (see Handoffs).
	Handoffs int
	// HandoffP50 and HandoffP99 are percentiles of release -> start.
	HandoffP50, HandoffP99 time.Duration
	// MaxConcurrency is the most executions of any one action running at once.
	MaxConcurrency int
	// LimitViolations counts admissions over the limit, over all actions.
	LimitViolations int
	// FIFOInversions counts out-of-order admission pairs, over all actions.
	FIFOInversions int64
}

// Summarize computes the Summary of a run whose clients planned planned
// executions under limit; openEnd is as in TrackConcurrency.
func Summarize(execs []Execution, planned, limit int, openEnd int64) Summary {
	s := Summary{Planned: planned}
	var first, last int64
	for _, e := range execs {
		if e.Submit != 0 {
			s.Submitted++
			if first == 0 || e.Submit < first {
				first = e.Submit
			}
		}
		if e.Started() {
			s.Admitted++
		}
		if e.Finished() {
			s.Finished++
			last = max(last, e.End)
		}
	}
	s.Lost = max(0, planned-s.Finished)
	if first != 0 && last > first {
		s.Wall = time.Duration(last - first)
		s.AdmittedPerS = float64(s.Admitted) / s.Wall.Seconds()
	}
	waits := Waits(execs)
	s.WaitP50, s.WaitP99 = Percentile(waits, 50), Percentile(waits, 99)
	hand := Handoffs(execs)
	s.Handoffs = len(hand)
	s.HandoffP50, s.HandoffP99 = Percentile(hand, 50), Percentile(hand, 99)
	for _, c := range TrackConcurrency(execs, limit, openEnd) {
		s.MaxConcurrency = max(s.MaxConcurrency, c.Max)
		s.LimitViolations += c.Violations
	}
	s.FIFOInversions = FIFOInversions(execs)
	return s
}

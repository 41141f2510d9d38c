// Package metrics turns the bench's per-execution events into the figures
// the report shows: latency percentiles, handoff times, the concurrency the
// bench itself saw, FIFO inversions and lost executions.
//
// Every function here is pure: it reads a list of executions and computes,
// so the tests can check each figure on hand-made lists with known answers.
package metrics

import (
	"slices"
	"sort"
	"time"
)

// Execution is what the bench recorded about one execution. Times are Unix
// nanoseconds on the host's wall clock (shared by every bench process on one
// host); 0 means the event did not happen.
type Execution struct {
	// Action is the action ref.
	Action string
	// ID is the execution ID.
	ID string
	// Process is the bench process that ran it (0 when there is only one).
	Process int
	// Submit is when the client called EnqueueAndWait.
	Submit int64
	// Start is when EnqueueAndWait returned a lease (admitted).
	Start int64
	// End is when the client finished its work, just before it called
	// Release: the slot is certainly free after End, and still held at Start.
	End int64
	// Seq is Lease.Seq: the order in which the enqueue reached Redis.
	Seq int64
	// Token is Lease.Token: the fencing token, increasing per action with
	// every grant, so it is the order in which Redis admitted executions.
	Token int64
	// Err is why the execution did not run, if it did not.
	Err string
}

// Started reports whether the execution was admitted.
func (e Execution) Started() bool { return e.Start != 0 }

// Finished reports whether the execution ran to its end.
func (e Execution) Finished() bool { return e.Start != 0 && e.End != 0 }

// Percentile returns the p-th percentile (0 < p <= 100) of values by the
// nearest-rank method: the smallest value such that at least p% of the
// values are <= it. values need not be sorted; it returns 0 when empty.
func Percentile(values []time.Duration, p float64) time.Duration {
	if len(values) == 0 {
		return 0
	}
	s := slices.Clone(values)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []time.Duration, p float64) time.Duration {
	rank := int(p/100*float64(len(s)) + 0.999999999) // ceil, robust to float error
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

// Waits returns submit -> start of every started execution.
func Waits(execs []Execution) []time.Duration {
	var out []time.Duration
	for _, e := range execs {
		if e.Started() && e.Submit != 0 {
			out = append(out, time.Duration(e.Start-e.Submit))
		}
	}
	return out
}

// Handoffs returns, for every admission that waited for a release, the time
// from the latest release (End) on the same action before its Start to its
// Start. An admission waited when that latest release came after its
// Submit; one with no release between its Submit and its Start found a free
// slot and is not counted.
func Handoffs(execs []Execution) []time.Duration {
	var out []time.Duration
	for _, group := range byAction(execs) {
		var ends []int64
		for _, e := range group {
			if e.End != 0 {
				ends = append(ends, e.End)
			}
		}
		slices.Sort(ends)
		for _, e := range group {
			if !e.Started() {
				continue
			}
			// Latest end strictly before the start.
			i := sort.Search(len(ends), func(i int) bool { return ends[i] >= e.Start })
			if i == 0 {
				continue
			}
			last := ends[i-1]
			if last > e.Submit {
				out = append(out, time.Duration(e.Start-last))
			}
		}
	}
	return out
}

// Concurrency is what the bench saw of one action's slots.
type Concurrency struct {
	// Max is the most executions of the action running at once.
	Max int
	// Violations counts admissions that took the running count above the limit.
	Violations int
}

// TrackConcurrency replays each action's start and end events in time order
// and reports, per action, the most executions running at once and the
// starts that went over limit (limit < 0: none do). An execution that started
// but has no End runs until openEnd (e.g. the moment its process was killed);
// with openEnd 0 it runs to the end of the replay. At equal times ends come
// first: a slot freed and retaken at the same instant is not an overlap.
func TrackConcurrency(execs []Execution, limit int, openEnd int64) map[string]Concurrency {
	type point struct {
		t     int64
		delta int
	}
	out := map[string]Concurrency{}
	for action, group := range byAction(execs) {
		var pts []point
		for _, e := range group {
			if !e.Started() {
				continue
			}
			pts = append(pts, point{e.Start, +1})
			end := e.End
			if end == 0 {
				end = openEnd
			}
			if end != 0 {
				pts = append(pts, point{end, -1})
			}
		}
		slices.SortFunc(pts, func(a, b point) int {
			if a.t != b.t {
				return cmp64(a.t, b.t)
			}
			return a.delta - b.delta // -1 before +1
		})
		var c Concurrency
		running := 0
		for _, p := range pts {
			running += p.delta
			if p.delta > 0 {
				c.Max = max(c.Max, running)
				if limit >= 0 && running > limit {
					c.Violations++
				}
			}
		}
		out[action] = c
	}
	return out
}

// FIFOInversions counts, per action, the pairs of admitted executions where
// the later-submitted one (higher Seq) was admitted before the earlier one
// (lower Token). Token is Redis's own admission order, so the count does not
// depend on how fast each bench process noticed its grant.
func FIFOInversions(execs []Execution) int64 {
	var total int64
	for _, group := range byAction(execs) {
		var started []Execution
		for _, e := range group {
			if e.Started() {
				started = append(started, e)
			}
		}
		// Order by admission; count pairs whose Seq order disagrees.
		slices.SortFunc(started, func(a, b Execution) int { return cmp64(a.Token, b.Token) })
		seqs := make([]int64, len(started))
		for i, e := range started {
			seqs[i] = e.Seq
		}
		total += countInversions(seqs)
	}
	return total
}

// countInversions counts pairs i < j with s[i] > s[j], by merge sort.
func countInversions(s []int64) int64 {
	if len(s) < 2 {
		return 0
	}
	buf := make([]int64, len(s))
	var sortCount func(a, tmp []int64) int64
	sortCount = func(a, tmp []int64) int64 {
		if len(a) < 2 {
			return 0
		}
		mid := len(a) / 2
		n := sortCount(a[:mid], tmp[:mid]) + sortCount(a[mid:], tmp[mid:])
		i, j, k := 0, mid, 0
		for i < mid && j < len(a) {
			if a[i] <= a[j] {
				tmp[k] = a[i]
				i++
			} else {
				tmp[k] = a[j]
				n += int64(mid - i)
				j++
			}
			k++
		}
		k += copy(tmp[k:], a[i:mid])
		copy(tmp[k:], a[j:])
		copy(a, tmp[:len(a)])
		return n
	}
	return sortCount(slices.Clone(s), buf)
}

func byAction(execs []Execution) map[string][]Execution {
	out := map[string][]Execution{}
	for _, e := range execs {
		out[e.Action] = append(out[e.Action], e)
	}
	return out
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

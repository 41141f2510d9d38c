// Package ratecheck checks a bench run against the throttle and quota
// promises, from the run's own bookkeeping: every admission's fencing
// token, enqueue seq and grant time (Redis clock), and every quota
// decision with its window.
package ratecheck

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Admission is one admission of one action, as Redis recorded it.
type Admission struct {
	// Token is the fencing token: the order of admissions of the action.
	Token int64
	// Seq is the enqueue order (FIFO position) of the execution.
	Seq int64
	// At is when the slot was granted, on the Redis clock.
	At time.Time
}

// Bound is a rate promise: over any interval of length T, at most
// Limit*T/Per + max(Burst, 1) admissions. Slack widens every interval by
// the resolution of the recorded times (grant times have milliseconds).
type Bound struct {
	Limit int
	Per   time.Duration
	Burst int
	Slack time.Duration
}

// Excess returns the worst number of admissions over the bound in any
// interval of the run (0: none over it), and how many admissions end an
// interval that is over it. It checks every interval between two
// admissions, which are the tightest: O(n) with a running minimum.
func Excess(adm []Admission, b Bound) (worst, over int) {
	if len(adm) == 0 || b.Per <= 0 {
		return 0, 0
	}
	ts := byTime(adm)
	r := float64(b.Limit) / float64(b.Per.Microseconds()) // admissions per µs
	allowance := r*float64(b.Slack.Microseconds()) + float64(max(b.Burst, 1))
	// Interval [i, j] holds j-i+1 admissions over t_j - t_i:
	// excess = (j - r t_j) - (i - r t_i) + 1 - allowance.
	minStart := math.Inf(1)
	for j, t := range ts {
		minStart = min(minStart, float64(j)-r*t)
		e := float64(j) - r*t - minStart + 1 - allowance
		if e > 1e-9 {
			over++
			worst = max(worst, int(math.Ceil(e-1e-9)))
		}
	}
	return worst, over
}

// byTime returns the grant times in µs after the first, in admission
// order (by time, then token): relative, so that doubles keep the
// microseconds.
func byTime(adm []Admission) []float64 {
	s := slices.Clone(adm)
	slices.SortFunc(s, func(a, b Admission) int { return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Token, b.Token)) })
	ts := make([]float64, len(s))
	for i, a := range s {
		ts[i] = float64(a.At.Sub(s[0].At).Microseconds())
	}
	return ts
}

// Spacing is how far apart admissions came once the burst was used up.
type Spacing struct {
	// N counts the gaps measured.
	N int
	// Mean, P50 and P99 are the gaps between consecutive admissions.
	Mean, P50, P99 time.Duration
}

// Spacings measures the gaps after the first max(burst, 1) admissions,
// which may come at once.
func Spacings(adm []Admission, burst int) Spacing {
	ts := byTime(adm)
	k := max(burst, 1)
	if len(ts) <= k {
		return Spacing{}
	}
	gaps := make([]float64, 0, len(ts)-k)
	for i := k; i < len(ts); i++ {
		gaps = append(gaps, ts[i]-ts[i-1])
	}
	mean := (ts[len(ts)-1] - ts[k-1]) / float64(len(gaps))
	slices.Sort(gaps)
	us := func(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }
	return Spacing{N: len(gaps), Mean: us(mean), P50: us(gaps[len(gaps)/2]), P99: us(gaps[(len(gaps)*99)/100])}
}

// FIFOInversions counts admissions whose execution was enqueued before one
// admitted earlier (by token): 0 when the queue stayed FIFO.
func FIFOInversions(adm []Admission) int {
	s := slices.Clone(adm)
	slices.SortFunc(s, func(a, b Admission) int { return cmp.Compare(a.Token, b.Token) })
	n := 0
	var top int64 = math.MinInt64
	for _, a := range s {
		if a.Seq < top {
			n++
		}
		top = max(top, a.Seq)
	}
	return n
}

// Decision is one request a quota judged: accepted or refused, in the
// window (its start) the quota counted it in.
type Decision struct {
	Action   string
	Window   time.Time
	Accepted bool
}

// WindowCount is what one action's quota did in one window.
type WindowCount struct {
	Action   string    `json:"action"`
	Start    time.Time `json:"window_start"`
	Accepted int       `json:"accepted"`
	Rejected int       `json:"rejected"`
}

// Windows counts the decisions by action and window, in order.
func Windows(ds []Decision) []WindowCount {
	type key struct {
		action string
		start  int64
	}
	idx := map[key]int{}
	var out []WindowCount
	for _, d := range ds {
		k := key{d.Action, d.Window.UnixMicro()}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, WindowCount{Action: d.Action, Start: d.Window})
		}
		if d.Accepted {
			out[i].Accepted++
		} else {
			out[i].Rejected++
		}
	}
	slices.SortFunc(out, func(a, b WindowCount) int {
		return cmp.Or(cmp.Compare(a.Action, b.Action), a.Start.Compare(b.Start))
	})
	return out
}

// QuotaVerdict sorts windows by what the quota promised: Exact windows
// accepted exactly limit and refused the rest; Over windows accepted more
// than limit; Early windows refused a request before limit were accepted;
// Short windows accepted fewer than limit and refused nothing (the run
// asked for no more there: not a failure).
type QuotaVerdict struct {
	Exact, Over, Early, Short int
}

// Judge checks every window against limit.
func Judge(ws []WindowCount, limit int) QuotaVerdict {
	var v QuotaVerdict
	for _, w := range ws {
		switch {
		case w.Accepted > limit:
			v.Over++
		case w.Accepted == limit:
			v.Exact++
		case w.Rejected > 0:
			v.Early++
		default:
			v.Short++
		}
	}
	return v
}

package httpapi

import (
	"slices"
	"strings"
	"time"

	"github.com/batonhq/baton/coordinator"
)

// QueueStats is coordinator.QueueStats as JSON (snake_case).
type QueueStats struct {
	Action           string     `json:"action"`
	QueueLength      int64      `json:"queue_length"`
	ActiveCount      int64      `json:"active_count"`
	MaxConcurrent    int64      `json:"max_concurrent"`
	LimitSource      string     `json:"limit_source"`
	OldestEnqueuedAt *time.Time `json:"oldest_enqueued_at"`
	TotalEnqueued    int64      `json:"total_enqueued"`
	TotalAdmitted    int64      `json:"total_admitted"`
	TotalCompleted   int64      `json:"total_completed"`
	TotalTimedOut    int64      `json:"total_timed_out"`
	TotalCanceled    int64      `json:"total_canceled"`
	TotalRejected    int64      `json:"total_rejected"`
	TotalReclaimed   int64      `json:"total_reclaimed"`
	TotalAbandoned   int64      `json:"total_abandoned"`
	Wait             Wait       `json:"wait"`
}

// Wait is the wait-time histogram: counts[i] counts waits up to
// bounds_seconds[i] and above the previous bound; over counts the rest.
type Wait struct {
	BoundsSeconds []float64 `json:"bounds_seconds"`
	Counts        []int64   `json:"counts"`
	Over          int64     `json:"over"`
	Count         int64     `json:"count"`
	SumSeconds    float64   `json:"sum_seconds"`
}

// NewQueueStats converts the core's stats; times are UTC RFC 3339.
func NewQueueStats(st coordinator.QueueStats) QueueStats {
	out := QueueStats{
		Action: st.Action, QueueLength: st.QueueLength, ActiveCount: st.ActiveCount,
		MaxConcurrent: st.MaxConcurrent, LimitSource: st.LimitSource,
		TotalEnqueued: st.TotalEnqueued, TotalAdmitted: st.TotalAdmitted, TotalCompleted: st.TotalCompleted,
		TotalTimedOut: st.TotalTimedOut, TotalCanceled: st.TotalCanceled, TotalRejected: st.TotalRejected,
		TotalReclaimed: st.TotalReclaimed, TotalAbandoned: st.TotalAbandoned,
		Wait: Wait{Counts: st.Wait.Buckets, Over: st.Wait.Over, Count: st.Wait.Count, SumSeconds: st.Wait.Sum.Seconds()},
	}
	if out.Wait.Counts == nil {
		out.Wait.Counts = []int64{}
	}
	for _, b := range coordinator.WaitBuckets {
		out.Wait.BoundsSeconds = append(out.Wait.BoundsSeconds, b.Seconds())
	}
	out.OldestEnqueuedAt = timePtr(st.OldestEnqueuedAt)
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// ActionPage is one page of GET /api/v1/actions.
type ActionPage struct {
	Actions    []QueueStats `json:"actions"`
	NextCursor uint64       `json:"next_cursor"`
}

// ExecutionState is coordinator.ExecutionState as JSON; fields that do not
// apply to the status are left out.
type ExecutionState struct {
	Action        string     `json:"action"`
	ExecutionID   string     `json:"execution_id"`
	Status        string     `json:"status"`
	Owner         string     `json:"owner,omitempty"`
	Position      *int64     `json:"position,omitempty"`
	EnqueuedAt    *time.Time `json:"enqueued_at,omitempty"`
	Token         int64      `json:"token,omitempty"`
	RunningSince  *time.Time `json:"running_since,omitempty"`
	LeaseDeadline *time.Time `json:"lease_deadline,omitempty"`
	Acknowledged  *bool      `json:"acknowledged,omitempty"`
}

// NewExecutionState converts the core's execution state.
func NewExecutionState(st coordinator.ExecutionState) ExecutionState {
	out := ExecutionState{Action: st.Action, ExecutionID: st.ExecutionID, Status: string(st.Status), Owner: st.Owner}
	switch st.Status {
	case coordinator.StatusWaiting:
		pos := st.Position
		out.Position, out.EnqueuedAt = &pos, timePtr(st.EnqueuedAt)
	case coordinator.StatusRunning:
		ack := st.Acknowledged
		out.Token, out.Acknowledged = st.Token, &ack
		out.RunningSince, out.LeaseDeadline = timePtr(st.RunningSince), timePtr(st.LeaseDeadline)
	}
	return out
}

// Policy is a limit set on a scope.
type Policy struct {
	Scope         string `json:"scope"`
	MaxConcurrent int    `json:"max_concurrent"`
}

func sortPolicies(p []Policy) {
	slices.SortFunc(p, func(a, b Policy) int { return strings.Compare(a.Scope, b.Scope) })
}

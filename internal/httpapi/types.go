package httpapi

import (
	"slices"
	"strings"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// QueueStats is coordinator.QueueStats as JSON (snake_case).
type QueueStats struct {
	Action             string     `json:"action"`
	QueueLength        int64      `json:"queue_length"`
	ActiveCount        int64      `json:"active_count"`
	MaxConcurrent      int64      `json:"max_concurrent"`
	LimitSource        string     `json:"limit_source"`
	Rate               *Rate      `json:"rate"`
	RateSource         string     `json:"rate_source"`
	ThrottledUntil     *time.Time `json:"throttled_until"`
	Quota              *Quota     `json:"quota"`
	QuotaSource        string     `json:"quota_source"`
	QuotaUsed          int64      `json:"quota_used"`
	QuotaResetAt       *time.Time `json:"quota_reset_at"`
	OldestEnqueuedAt   *time.Time `json:"oldest_enqueued_at"`
	TotalEnqueued      int64      `json:"total_enqueued"`
	TotalAdmitted      int64      `json:"total_admitted"`
	TotalCompleted     int64      `json:"total_completed"`
	TotalTimedOut      int64      `json:"total_timed_out"`
	TotalCanceled      int64      `json:"total_canceled"`
	TotalRejected      int64      `json:"total_rejected"`
	TotalQuotaRejected int64      `json:"total_quota_rejected"`
	TotalThrottled     int64      `json:"total_throttled"`
	TotalReclaimed     int64      `json:"total_reclaimed"`
	TotalAbandoned     int64      `json:"total_abandoned"`
	Wait               Wait       `json:"wait"`
}

// Rate is limits.Rate as JSON: per is a duration string ("1m", "1s").
type Rate struct {
	Limit int    `json:"limit"`
	Per   string `json:"per"`
	Burst int    `json:"burst"`
}

// Quota is limits.Quota as JSON: window is "minute", "hour" or "day".
type Quota struct {
	Limit  int64  `json:"limit"`
	Window string `json:"window"`
}

// NewRate converts a rate; nil for the zero Rate (none).
func NewRate(r limits.Rate) *Rate {
	if r.IsZero() {
		return nil
	}
	return &Rate{Limit: r.Limit, Per: limits.FormatPer(r.Per), Burst: r.Burst}
}

// NewQuota converts a quota; nil for the zero Quota (none).
func NewQuota(q limits.Quota) *Quota {
	if q.IsZero() {
		return nil
	}
	return &Quota{Limit: q.Limit, Window: q.Window.String()}
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
		Rate: NewRate(st.Rate), RateSource: st.RateSource, ThrottledUntil: timePtr(st.ThrottledUntil),
		Quota: NewQuota(st.Quota), QuotaSource: st.QuotaSource, QuotaUsed: st.QuotaUsed,
		QuotaResetAt:       timePtr(st.QuotaResetAt),
		TotalQuotaRejected: st.TotalQuotaRejected, TotalThrottled: st.TotalThrottled,
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
	// NewerKeySchema names the actions of the page whose keys a newer
	// version of Baton keeps in a form this daemon does not read
	// (coordinator.ErrKeySchema): they have no stats here.
	NewerKeySchema []string `json:"newer_key_schema,omitempty"`
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

// Policy is what is set on a scope: a concurrency limit, a rate and a
// quota, each left out when the scope does not set it.
type Policy struct {
	Scope         string `json:"scope"`
	MaxConcurrent *int   `json:"max_concurrent,omitempty"`
	Rate          *Rate  `json:"rate,omitempty"`
	Quota         *Quota `json:"quota,omitempty"`
}

// NewPolicy is what p sets on scope; ok is false when it sets nothing.
func NewPolicy(p limits.Policies, scope limits.Scope) (out Policy, ok bool) {
	out.Scope = scope.String()
	if n, set := p.Limits[scope]; set {
		out.MaxConcurrent = &n
	}
	if r, set := p.Rates[scope]; set {
		out.Rate = NewRate(r)
	}
	if q, set := p.Quotas[scope]; set {
		out.Quota = NewQuota(q)
	}
	return out, out.MaxConcurrent != nil || out.Rate != nil || out.Quota != nil
}

// PolicyList is every policy, by scope.
func PolicyList(p limits.Policies) []Policy {
	scopes := map[limits.Scope]bool{}
	for s := range p.Limits {
		scopes[s] = true
	}
	for s := range p.Rates {
		scopes[s] = true
	}
	for s := range p.Quotas {
		scopes[s] = true
	}
	out := []Policy{}
	for s := range scopes {
		if pol, ok := NewPolicy(p, s); ok {
			out = append(out, pol)
		}
	}
	sortPolicies(out)
	return out
}

func sortPolicies(p []Policy) {
	slices.SortFunc(p, func(a, b Policy) int { return strings.Compare(a.Scope, b.Scope) })
}

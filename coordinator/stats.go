package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// QueueStats is one action's queue and slot usage, read in one atomic step.
type QueueStats struct {
	// Action is the action ref.
	Action string
	// QueueLength counts waiting executions (waiters of dead processes
	// included until they reach the head and are dropped).
	QueueLength int64
	// ActiveCount counts executions holding a slot, from grant to release:
	// an entry past its deadline counts until it is reclaimed (by the next
	// admission that needs the slot, or a sweeper).
	ActiveCount int64
	// MaxConcurrent is the limit in force; limits.Unlimited (-1) when none.
	MaxConcurrent int64
	// LimitSource is the scope the limit came from ("action:core.http",
	// "pack:core", "global"), or "default" when no scope sets one.
	LimitSource string
	// Rate is the rate (throttle) in force; the zero Rate when none.
	Rate limits.Rate
	// RateSource is the scope the rate came from, or "default" when none applies.
	RateSource string
	// ThrottledUntil is when the head of the queue gets its rate token
	// (Redis clock), when the head waits for one; zero otherwise, and with a
	// rate of 0 (no token comes).
	ThrottledUntil time.Time
	// Quota is the quota in force; the zero Quota when none.
	Quota limits.Quota
	// QuotaSource is the scope the quota came from, or "default" when none applies.
	QuotaSource string
	// QuotaUsed counts the executions accepted in the current window
	// (admitted, and waiting with a reservation); 0 when no quota applies.
	QuotaUsed int64
	// QuotaResetAt is when the current window ends (Redis clock); zero when
	// no quota applies.
	QuotaResetAt time.Time
	// OldestEnqueuedAt is when the head of the queue was enqueued (Redis
	// clock); zero when the queue is empty.
	OldestEnqueuedAt time.Time

	// TotalEnqueued counts accepted requests. Each ends as admitted, timed
	// out, canceled or abandoned, or is still waiting:
	// TotalEnqueued = TotalAdmitted + TotalTimedOut + TotalCanceled + TotalAbandoned + QueueLength.
	TotalEnqueued int64
	// TotalAdmitted counts grants (fast path and handoff) that were not given back.
	TotalAdmitted int64
	// TotalCompleted counts slots freed by Release or NotifyCompletion.
	TotalCompleted int64
	// TotalTimedOut counts waiters that reached QueueTimeout.
	TotalTimedOut int64
	// TotalCanceled counts waiters removed by CancelExecution or by their
	// caller's context.
	TotalCanceled int64
	// TotalRejected counts requests refused with ErrQueueFull (never enqueued).
	TotalRejected int64
	// TotalQuotaRejected counts requests refused with ErrQuotaExceeded
	// (never enqueued, so not in TotalEnqueued).
	TotalQuotaRejected int64
	// TotalThrottled counts executions that waited at the head of the
	// queue for a rate token (each once, however long it waited).
	TotalThrottled int64
	// TotalReclaimed counts slots taken back from expired leases and
	// unacknowledged grants.
	TotalReclaimed int64
	// TotalAbandoned counts waiters dropped because their process was dead.
	TotalAbandoned int64

	// Wait is the histogram of the time from enqueue to grant (Redis clock).
	Wait WaitHistogram
}

// WaitHistogram counts grants by how long they waited; Buckets[i] counts
// waits <= WaitBuckets[i] and above the previous bound (not cumulative),
// and Over those above the last bound.
type WaitHistogram struct {
	Buckets []int64
	Over    int64
	Count   int64
	Sum     time.Duration
}

// WaitBuckets are the upper bounds of the wait-time histogram (see
// scripts/lib.lua).
var WaitBuckets = []time.Duration{
	time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 500 * time.Millisecond, time.Second, 5 * time.Second,
	10 * time.Second, time.Minute,
}

// QueueStats reads one action's statistics.
func (c *Coordinator) QueueStats(ctx context.Context, action string) (QueueStats, error) {
	if err := validateRef(action); err != nil {
		return QueueStats{}, err
	}
	if err := c.ensurePolicies(ctx); err != nil {
		return QueueStats{}, err
	}
	r, err := scripts.Stats(ctx, c.run, c.keys.Action(action), c.policyArgs(action))
	if err != nil {
		return QueueStats{}, fmt.Errorf("baton: stats %s: %w", action, err)
	}
	st := QueueStats{
		Action:        action,
		QueueLength:   r.QueueLength,
		ActiveCount:   r.Active,
		MaxConcurrent: r.Limit,
		LimitSource:   r.LimitSource,
		Rate:          r.Rate,
		RateSource:    cmp.Or(r.RateSource, "default"),
		Quota:         r.Quota,
		QuotaSource:   cmp.Or(r.QuotaSource, "default"),
		QuotaUsed:     r.QuotaUsed,
	}
	if r.ThrottledUntil > 0 {
		st.ThrottledUntil = time.UnixMicro(r.ThrottledUntil)
	}
	if r.QuotaReset > 0 {
		st.QuotaResetAt = time.UnixMilli(r.QuotaReset)
	}
	meta, waits := r.Meta, r.Waits
	if r.HeadSeq != 0 {
		st.OldestEnqueuedAt = time.UnixMicro(r.HeadSeq)
	}
	n := func(field string) int64 { return parseInt(meta[field]) }
	st.TotalEnqueued, st.TotalAdmitted, st.TotalCompleted = n("enqueued"), n("admitted"), n("completed")
	st.TotalTimedOut, st.TotalCanceled, st.TotalRejected = n("timed_out"), n("canceled"), n("rejected")
	st.TotalReclaimed, st.TotalAbandoned = n("reclaimed"), n("abandoned")
	st.TotalThrottled, st.TotalQuotaRejected = n("throttled"), n("quota_rejected")
	for _, b := range WaitBuckets {
		st.Wait.Buckets = append(st.Wait.Buckets, parseInt(waits[fmt.Sprintf("le_%d", b.Milliseconds())]))
	}
	st.Wait.Over = parseInt(waits["le_inf"])
	st.Wait.Count = st.Wait.Over
	for _, n := range st.Wait.Buckets {
		st.Wait.Count += n
	}
	st.Wait.Sum = time.Duration(parseInt(waits["sum_us"])) * time.Microsecond
	return st, nil
}

// ExecutionStatus says where an execution stands.
type ExecutionStatus string

// The states of an execution.
const (
	StatusWaiting ExecutionStatus = "waiting"
	StatusRunning ExecutionStatus = "running"
	StatusUnknown ExecutionStatus = "unknown"
)

// ExecutionState is where one execution stands, read in one atomic step.
type ExecutionState struct {
	Action      string
	ExecutionID string
	Status      ExecutionStatus
	// Owner is the Coordinator that waits for or holds it, or "-" for a
	// lease held by its token (KeepLease).
	Owner string
	// Position is the place in the queue (0 is the head); waiting only.
	Position int64
	// EnqueuedAt is when the enqueue reached Redis; waiting only.
	EnqueuedAt time.Time
	// Token is the fencing token; running only.
	Token int64
	// RunningSince is when the slot was granted; running only.
	RunningSince time.Time
	// LeaseDeadline is when the lease expires unless renewed; running only.
	LeaseDeadline time.Time
	// Acknowledged is false while a grant is not yet known to be delivered:
	// its token was not read, or its process has not renewed it yet.
	Acknowledged bool
}

// ExecutionState reads where one execution stands.
func (c *Coordinator) ExecutionState(ctx context.Context, action, executionID string) (ExecutionState, error) {
	if err := validate(action, executionID); err != nil {
		return ExecutionState{}, err
	}
	r, err := scripts.State(ctx, c.run, c.keys.Action(action), executionID)
	if err != nil {
		return ExecutionState{}, fmt.Errorf("baton: state %s/%s: %w", action, executionID, err)
	}
	st := ExecutionState{Action: action, ExecutionID: executionID, Status: StatusUnknown}
	switch r.Status {
	case "waiting":
		st.Status, st.Owner, st.Position = StatusWaiting, r.Owner, r.Position
		st.EnqueuedAt = time.UnixMicro(r.Seq)
	case "running":
		st.Status, st.Token, st.Owner = StatusRunning, r.Fence, r.Owner
		st.RunningSince = time.UnixMilli(r.Since)
		st.LeaseDeadline = time.UnixMilli(r.Deadline)
		st.Acknowledged = r.Delivered
	}
	return st, nil
}

// Actions lists known action refs, a page at a time: pass cursor 0 first,
// then the returned cursor until it is 0 (SSCAN semantics: an action may
// appear twice; count is a hint).
func (c *Coordinator) Actions(ctx context.Context, cursor uint64, count int64) (refs []string, next uint64, err error) {
	refs, next, err = c.rdb.SScan(ctx, c.keys.Actions(), cursor, "", count).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("baton: listing actions: %w", err)
	}
	return refs, next, nil
}

// Ready checks that Redis answers and loads every script, so the first
// real call does not pay for it.
func (c *Coordinator) Ready(ctx context.Context) error {
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("baton: redis: %w", err)
	}
	for _, s := range scripts.All {
		if err := s.Load(ctx, c.rdb); err != nil {
			return fmt.Errorf("baton: loading scripts: %w", err)
		}
	}
	return nil
}

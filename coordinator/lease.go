package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/batonhq/baton/scripts"
)

// Lease is the right of one execution to hold a slot of its action. The
// Coordinator renews it in the background (one heartbeat per action, not per
// lease) until Release. If the slot is reclaimed (heartbeats stopped reaching
// Redis for LeaseTTL), Lost is closed and a late Release frees nothing.
type Lease struct {
	c      *Coordinator
	action string
	id     string
	fence  int64
	seq    int64

	lost     chan struct{}
	lostOnce sync.Once

	mu        sync.Mutex
	renewedAt time.Time // local time of the last admission or renewal
}

// Action is the action ref the lease belongs to.
func (l *Lease) Action() string { return l.action }

// ExecutionID is the execution holding the slot.
func (l *Lease) ExecutionID() string { return l.id }

// Token is the fencing token: strictly increasing per action over all grants,
// so a resource the execution writes to can refuse a stale holder.
func (l *Lease) Token() int64 { return l.fence }

// Seq is the execution's place in the action's FIFO order: the order in
// which its enqueue reached Redis. It is also its enqueue time in
// microseconds on the Redis clock (raised by a few microseconds at most when
// enqueues collide).
func (l *Lease) Seq() int64 { return l.seq }

// EnqueuedAt is when the enqueue reached Redis, on the Redis clock.
func (l *Lease) EnqueuedAt() time.Time { return time.UnixMicro(l.seq) }

// Lost is closed when the slot was reclaimed, or can no longer be renewed
// (no heartbeat succeeded for LeaseTTL, or the Coordinator was closed). The
// execution should then stop: another may hold the slot.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// Release frees the slot and hands it to the oldest waiter. It returns
// ErrLeaseLost when the slot was not held any more (reclaimed, or released
// already); nothing is freed then. It is NotifyCompletion with the lease's
// fencing token, so a stale lease never frees a newer holder's slot.
func (l *Lease) Release(ctx context.Context) error {
	held, err := l.c.release(ctx, l.action, l.id, l.fence)
	if err != nil {
		return err
	}
	if !held {
		return fmt.Errorf("%w: %s/%s (token %d) held no slot", ErrLeaseLost, l.action, l.id, l.fence)
	}
	return nil
}

// NotifyCompletion frees the slot of a running execution and hands it to the
// oldest waiter. held is false when the execution held no slot (unknown,
// still waiting, or already completed); nothing changes then.
func (c *Coordinator) NotifyCompletion(ctx context.Context, action, executionID string) (held bool, err error) {
	if err := validate(action, executionID); err != nil {
		return false, err
	}
	return c.release(ctx, action, executionID, 0)
}

func (c *Coordinator) release(ctx context.Context, action, id string, fence int64) (bool, error) {
	if err := c.ensurePolicies(ctx); err != nil {
		return false, err
	}
	ak := c.keys.action(action)
	args := append([]any{id, fence, c.ms(c.opts.AckTimeout)}, c.policyArgs(action)...)
	v, err := scripts.Release.Run(ctx, c.rdb, ak.with(), args...).Result()
	if err != nil {
		return false, fmt.Errorf("baton: release %s/%s: %w", action, id, err)
	}
	r := newReply("release", v, 3)
	held, due := r.int(0), r.int(2)
	if r.err != nil {
		return false, r.err
	}
	c.addDue(ctx, action, due)
	c.dropLease(action, id, fence)
	return held == 1, nil
}

// addLease records a lease this process holds, or returns the one already
// recorded for the same grant.
func (c *Coordinator) addLease(action, id string, fence, seq int64) *Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	as := c.actionLocked(action) // the live entry, which the heartbeat renews
	if l := as.leases[id]; l != nil && l.fence == fence {
		return l
	}
	l := &Lease{c: c, action: as.ref, id: id, fence: fence, seq: seq, lost: make(chan struct{}), renewedAt: time.Now()}
	if c.closed {
		l.markLost()
		return l
	}
	as.leases[id] = l
	return l
}

// dropLease forgets a released lease (any lease of id when fence is 0).
func (c *Coordinator) dropLease(action, id string, fence int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if as := c.actions[action]; as != nil {
		if l := as.leases[id]; l != nil && (fence == 0 || l.fence == fence) {
			delete(as.leases, id)
		}
	}
}

// heartbeatLoop renews this process's leases and liveness, one renew.lua
// call per action with local waiters or leases, every LeaseTTL/3.
func (c *Coordinator) heartbeatLoop() { c.every(c.opts.LeaseTTL/3, c.heartbeat) }

// heartbeat runs one renewal round over every action this process has
// waiters or leases in, and forgets actions it no longer uses.
func (c *Coordinator) heartbeat() {
	type work struct {
		as          *actionState
		oldest, seq string
		pairs       []any
	}
	var todo []work
	now := time.Now()
	func() {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		c.renewOwner(ctx)
	}()
	c.mu.Lock()
	for ref, as := range c.actions {
		if len(as.waiters) == 0 && len(as.leases) == 0 && !as.loopRunning {
			delete(c.actions, ref)
			continue
		}
		wk := work{as: as}
		if len(as.order) > 0 {
			wk.oldest, wk.seq = as.order[0].id, as.order[0].seqStr
		}
		for id, l := range as.leases {
			l.mu.Lock()
			stale := now.Sub(l.renewedAt) > c.opts.LeaseTTL
			l.mu.Unlock()
			if stale {
				// No renewal reached Redis for a whole lease: the slot may be
				// reclaimed already, so stop trusting it.
				delete(as.leases, id)
				l.markLost()
				continue
			}
			wk.pairs = append(wk.pairs, id, l.fence)
		}
		todo = append(todo, wk)
	}
	c.mu.Unlock()
	for _, wk := range todo {
		c.renew(wk.as, wk.oldest, wk.seq, wk.pairs)
	}
}

func (c *Coordinator) renew(as *actionState, oldest, oldestSeq string, pairs []any) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.LeaseTTL/3)
	defer cancel()
	start := time.Now()
	args := append([]any{c.owner, c.ms(c.opts.LeaseTTL), c.ms(c.opts.AckTimeout)}, c.policyArgs(as.ref)...)
	args = append(append(args, oldest, oldestSeq), pairs...)
	v, err := scripts.Renew.Run(ctx, c.rdb, as.keys.with(), args...).Result()
	if err != nil {
		c.log.Warn("baton: heartbeat", slog.String("action", as.ref), slog.Any("error", err))
		return
	}
	r := newReply("renew", v, 2)
	due, waiterOK, lost := r.int(0), r.int(1), r.tail(2)
	if r.err != nil {
		c.log.Error("baton: heartbeat", slog.String("action", as.ref), slog.Any("error", r.err))
		return
	}
	if due > 0 {
		c.addDue(ctx, as.ref, due) // heals the index if a sweeper lost a claim
	}
	if oldest != "" {
		c.checkWaiters(ctx, as, oldest, waiterOK == 1)
	}
	gone := map[string]bool{}
	for _, id := range lost {
		gone[id] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < len(pairs); i += 2 {
		id, fence := pairs[i].(string), pairs[i+1].(int64)
		l := as.leases[id]
		if l == nil || l.fence != fence {
			continue
		}
		if gone[id] {
			delete(as.leases, id)
			l.markLost()
			c.log.Warn("baton: lease lost", slog.String("action", as.ref), slog.String("execution", id), slog.Int64("token", l.fence))
			continue
		}
		l.mu.Lock()
		l.renewedAt = start
		l.mu.Unlock()
	}
}

// checkWaiters ends local waiters whose queue entries Redis no longer has
// (a restart or failover lost them), so they do not wait for a grant that
// cannot come. The oldest waiter is checked on every heartbeat; only when it
// is still missing half a heartbeat interval after it was first seen missing
// (a token in flight explains a short absence) are all of the action's
// waiters checked, one state read each.
func (c *Coordinator) checkWaiters(ctx context.Context, as *actionState, oldest string, ok bool) {
	c.mu.Lock()
	w := as.waiters[oldest]
	if w == nil || ok {
		if w != nil {
			w.missing = time.Time{}
		}
		c.mu.Unlock()
		return
	}
	if w.missing.IsZero() || time.Since(w.missing) < c.opts.LeaseTTL/6 {
		if w.missing.IsZero() {
			w.missing = time.Now()
		}
		c.mu.Unlock()
		return
	}
	all := make([]*waiter, 0, len(as.order))
	all = append(all, as.order...)
	c.mu.Unlock()
	for _, w := range all {
		st, err := c.ExecutionState(ctx, as.ref, w.id)
		if err != nil {
			return
		}
		present := (st.Status == StatusWaiting || st.Status == StatusRunning) && st.Owner == c.owner
		if present {
			continue
		}
		c.mu.Lock()
		if w.state != stateWaiting {
			c.mu.Unlock()
			continue
		}
		wake := as.finishLocked(w, nil, fmt.Errorf("%w: %s/%s: its queue entry is gone from Redis (restart or failover)",
			ErrLeaseLost, as.ref, w.id))
		c.mu.Unlock()
		if wake {
			c.wake(as)
		}
	}
}

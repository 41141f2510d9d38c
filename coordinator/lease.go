package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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
	renewedAt time.Time // local time before the last admission or renewal reached Redis
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
		l.c.dropGhost(ctx, l)
		return fmt.Errorf("%w: %s/%s (token %d) held no slot", ErrLeaseLost, l.action, l.id, l.fence)
	}
	return nil
}

// dropGhost removes what is left in Redis of a lease that held no slot at
// release. After a failover that lost the grant, Redis may still have the
// execution waiting in the queue under this process's owner, a waiter this
// process no longer has: its grants would never be read, and, the process
// being alive, would go back to the head of the queue again and again.
// cancel.lua removes it (or gives back its grant) only if the seq and the
// owner are this lease's.
func (c *Coordinator) dropGhost(ctx context.Context, l *Lease) {
	if l.seq == 0 {
		return
	}
	k := c.keys.Action(l.action)
	r, err := scripts.Cancel(ctx, c.run, k, l.id, strconv.FormatInt(l.seq, 10), c.owner, c.opts.AckTimeout)
	if err != nil {
		c.log.Warn("baton: removing the queue entry of a lost lease", slog.String("action", l.action), slog.String("execution", l.id), slog.Any("error", err))
		return
	}
	if r.Result != scripts.NotCanceled {
		c.log.Warn("baton: removed the queue entry of a lost lease (Redis lost its grant, as in a failover)",
			slog.String("action", l.action), slog.String("execution", l.id))
	}
	c.schedule(ctx, l.action, r.Due, r.Wake)
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
	if c.opts.ReadOnly {
		return false, ErrReadOnly
	}
	if err := c.ensurePolicies(ctx); err != nil {
		return false, err
	}
	var (
		r        scripts.ReleaseReply
		err      error
		giveUpAt time.Time
	)
	// A release whose outcome is unknown (its connection failed once it was
	// sent) is sent again, as enqueue's is: release.lua is idempotent per
	// token, and a retry that finds the slot already free (the lost call
	// freed it) reports ErrLeaseLost, as any release of a free slot does.
	for attempt := 0; ; attempt++ {
		r, err = scripts.Release(ctx, c.run, c.keys.Action(action), id, fence, c.opts.AckTimeout, c.policyArgs(action))
		if err == nil || errors.Is(err, ErrNotReplicated) || !outcomeUnknown(err) {
			break
		}
		if giveUpAt.IsZero() {
			giveUpAt = time.Now().Add(c.opts.LeaseTTL)
		}
		if !time.Now().Before(giveUpAt) || !c.sleepCtx(ctx, backoff(attempt)) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, ErrNotReplicated) {
			// Released on the master: stop renewing it. If a failover loses
			// the release, the slot comes back when the lease expires.
			c.dropLease(action, id, fence)
		}
		return false, fmt.Errorf("baton: release %s/%s: %w", action, id, err)
	}
	c.schedule(ctx, action, r.Due, r.Wake)
	c.dropLease(action, id, fence)
	return r.Held, nil
}

// dropLease forgets a released lease (any lease of id when fence is 0).
func (c *Coordinator) dropLease(ref, id string, fence int64) {
	c.amu.Lock()
	a := c.actions[ref]
	c.amu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.leases[id]; l != nil && (fence == 0 || l.fence == fence) {
		delete(a.leases, id)
	}
}

// heartbeatLoop renews this process's leases and liveness, one renew.lua
// call per action with local waiters or leases, every LeaseTTL/3.
func (c *Coordinator) heartbeatLoop() { c.every(c.opts.LeaseTTL/3, c.heartbeat) }

// heartbeat runs one renewal round over every action this process has
// waiters or leases in, and forgets actions it no longer uses. The renewals
// run concurrently, so the batcher sends them in few pipelines. A renewal
// that fails is tried again after a pause (heartbeatRetry, doubling) until
// it lands, the next round is due or Close starts: one failed round must not
// leave a live process a third of LeaseTTL closer to being presumed dead.
func (c *Coordinator) heartbeat() {
	func() {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		c.renewOwner(ctx)
	}()
	c.amu.Lock()
	acts := make([]*action, 0, len(c.actions))
	for ref, a := range c.actions {
		a.mu.Lock()
		if a.idleLocked() {
			a.dead = true
			delete(c.actions, ref)
		} else {
			acts = append(acts, a)
		}
		a.mu.Unlock()
	}
	c.amu.Unlock()
	interval := c.opts.LeaseTTL / 3
	start := time.Now()
	pause := min(interval/10, heartbeatRetry)
	for attempt := 1; ; attempt++ {
		acts = renewAll(acts, attempt)
		if len(acts) == 0 || time.Since(start)+pause >= interval {
			return
		}
		t := time.NewTimer(pause)
		select {
		case <-c.stop:
			t.Stop()
			return
		case <-t.C:
		}
		pause *= 2
	}
}

// heartbeatRetry is the first pause before a failed renewal is tried again
// (at most a tenth of the heartbeat interval); each later pause doubles.
const heartbeatRetry = time.Second

// renewAll renews every action of acts concurrently and returns those whose
// renewal failed.
func renewAll(acts []*action, attempt int) []*action {
	var g sync.WaitGroup
	var mu sync.Mutex
	var failed []*action
	sem := make(chan struct{}, 64)
	for _, a := range acts {
		g.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; g.Done() }()
			if !a.renew(attempt) {
				mu.Lock()
				failed = append(failed, a)
				mu.Unlock()
			}
		}()
	}
	g.Wait()
	return failed
}

// renew is one heartbeat for this action: it extends the leases, keeps the
// owner alive, and checks the oldest waiter (a grant whose token was lost,
// or an entry Redis lost); waiters already seen missing are re-checked. It
// reports whether the renewal reached Redis. attempt numbers the tries of one
// heartbeat round: only the first checks waiters, so that two checks stay a
// heartbeat interval apart (a waiter seen missing twice has failed, and the
// interval is what lets a removal token in flight reach its wait loop first).
func (a *action) renew(attempt int) bool {
	c := a.c
	now := time.Now()
	args := scripts.RenewArgs{Owner: c.owner, LeaseTTL: c.opts.LeaseTTL, AckTimeout: c.opts.AckTimeout, Policy: c.policyArgs(a.ref)}
	var oldest *waiter
	suspects := false
	var stale []*Lease
	a.mu.Lock()
	for id, l := range a.leases {
		l.mu.Lock()
		old := now.Sub(l.renewedAt) > c.opts.LeaseTTL
		l.mu.Unlock()
		if old {
			// No renewal reached Redis for a whole lease: the slot may be
			// reclaimed already, so stop trusting it.
			delete(a.leases, id)
			l.markLost()
			stale = append(stale, l)
			continue
		}
		args.Leases = append(args.Leases, scripts.Held{Execution: id, Fence: l.fence})
	}
	for _, w := range a.order {
		switch w.state {
		case waiterQueued:
			if oldest == nil || w.seq < oldest.seq {
				oldest = w
			}
		case waiterSuspect:
			suspects = true
		}
	}
	if attempt > 1 {
		oldest, suspects = nil, false
	}
	if oldest != nil {
		args.Oldest, args.OldestSeq = oldest.id, oldest.seqStr
	}
	a.mu.Unlock()
	for _, l := range stale {
		l.mu.Lock()
		since := now.Sub(l.renewedAt)
		l.mu.Unlock()
		c.log.Warn("baton: lease lost: no renewal reached Redis within LeaseTTL", slog.String("action", a.ref),
			slog.String("execution", l.id), slog.Int64("token", l.fence), slog.Duration("since", since))
	}

	ctx, cancel := context.WithTimeout(c.ctx, c.opts.LeaseTTL/3)
	defer cancel()
	r, err := scripts.Renew(ctx, c.run, a.keys, args)
	if err != nil {
		c.log.Warn("baton: heartbeat", slog.String("action", a.ref), slog.Int("attempt", attempt), slog.Any("error", err))
		return false
	}
	c.schedule(ctx, a.ref, r.Due, r.Wake) // the due heals the index if a sweeper lost a claim
	if oldest != nil {
		a.applyStatus(oldest, r.Oldest)
	}
	if suspects {
		a.reconcile()
	}
	gone := map[string]bool{}
	for _, id := range r.Lost {
		gone[id] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range args.Leases {
		l := a.leases[h.Execution]
		if l == nil || l.fence != h.Fence {
			continue
		}
		if gone[h.Execution] {
			delete(a.leases, h.Execution)
			l.markLost()
			c.log.Warn("baton: lease lost", slog.String("action", a.ref), slog.String("execution", h.Execution), slog.Int64("token", l.fence))
			continue
		}
		l.mu.Lock()
		l.renewedAt = now
		l.mu.Unlock()
	}
	return true
}

// KeepLease extends the lease of executionID, named by its fencing token,
// to ttl from now on the Redis clock, and returns its new deadline. Once a
// KeepLease has handed the lease to its token, later ones never shorten it:
// a later deadline already set stays, and is returned. Any
// process may call it: the token is the proof of holding. The lease is then
// held by its token rather than by a process: no Coordinator's heartbeat
// renews it any more (this one lets go of its own Lease for it, whose Lost
// channel closes), so it is reclaimed ttl after the last KeepLease unless
// released first (ReleaseLease). This is how an executor that is not a
// Coordinator, such as a client of the daemon's HTTP API, holds a slot.
//
// It returns ErrLeaseLost when the token holds no slot: unknown, released,
// reclaimed, re-granted under another token, or expired (an expired lease
// is reclaimed then, not revived).
func (c *Coordinator) KeepLease(ctx context.Context, action, executionID string, token int64, ttl time.Duration) (time.Time, error) {
	if c.opts.ReadOnly {
		return time.Time{}, ErrReadOnly
	}
	if err := validateToken(action, executionID, token); err != nil {
		return time.Time{}, err
	}
	if ttl < time.Millisecond {
		return time.Time{}, fmt.Errorf("%w: lease TTL %v: must be at least 1ms", ErrInvalidArgument, ttl)
	}
	c.letGo(action, executionID, token)
	r, err := scripts.Keep(ctx, c.run, c.keys.Action(action), executionID, token, ttl, c.opts.AckTimeout)
	if err != nil {
		return time.Time{}, fmt.Errorf("baton: keep %s/%s: %w", action, executionID, err)
	}
	c.schedule(ctx, action, r.Due, r.Wake)
	if !r.Held {
		return time.Time{}, fmt.Errorf("%w: %s/%s (token %d) holds no slot", ErrLeaseLost, action, executionID, token)
	}
	return time.UnixMilli(r.Deadline), nil
}

// ReleaseLease frees the slot that executionID holds under token and hands
// it to the oldest waiter, from any process: Lease.Release without the
// Lease. It returns ErrLeaseLost when the token holds no slot (released
// already, reclaimed, or another token's); nothing is freed then.
func (c *Coordinator) ReleaseLease(ctx context.Context, action, executionID string, token int64) error {
	if err := validateToken(action, executionID, token); err != nil {
		return err
	}
	held, err := c.release(ctx, action, executionID, token)
	if err != nil {
		return err
	}
	if !held {
		return fmt.Errorf("%w: %s/%s (token %d) held no slot", ErrLeaseLost, action, executionID, token)
	}
	return nil
}

func validateToken(action, executionID string, token int64) error {
	if err := validate(action, executionID); err != nil {
		return err
	}
	if token < 1 {
		return fmt.Errorf("%w: token %d: fencing tokens are whole numbers from 1", ErrInvalidArgument, token)
	}
	return nil
}

// letGo stops this process renewing its lease of id under fence, if it has
// one: the lease is about to be held by its token (KeepLease).
func (c *Coordinator) letGo(ref, id string, fence int64) {
	c.amu.Lock()
	a := c.actions[ref]
	c.amu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.leases[id]; l != nil && l.fence == fence {
		delete(a.leases, id)
		l.markLost()
	}
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/scripts"
)

// EnqueueAndWait blocks until executionID may start as an execution of the
// action, then returns its lease. The caller runs the execution and then
// calls Lease.Release (or NotifyCompletion).
//
// With a free slot and nobody waiting it returns after one script call.
// Otherwise the execution waits in the action's FIFO queue. It ends with
// ErrQueueFull (nothing stored), a *QuotaError (ErrQuotaExceeded, nothing
// stored), ErrQueueTimeout, ErrCanceled, ErrLeaseLost, ErrNotReplicated
// (with Options.WaitReplicas), ErrClosed, or the context's error; in each
// case it is out of the queue (or on its way out: a removal that cannot
// reach Redis is retried in the background until it lands or the
// Coordinator closes) and holds no slot.
//
// A dropped connection does not end the call: an enqueue whose reply was
// lost is sent again (it is idempotent per execution ID). Only a Redis that
// stays unreachable for LeaseTTL ends it with Redis's error; an error reply
// from Redis (a refused command, say) ends it at once.
//
// Calling it again with an ID that is already waiting keeps the ID's place
// and returns the same grant; with an ID that is running it returns its
// lease. This is how a redelivered request re-attaches.
func (c *Coordinator) EnqueueAndWait(ctx context.Context, action, executionID string) (*Lease, error) {
	if c.opts.ReadOnly {
		return nil, ErrReadOnly
	}
	if err := validate(action, executionID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, l, w := c.attach(action, executionID)
	for w != nil && w.abandoned() {
		// Its last caller left and its give-up is in flight: that request
		// is over; this one starts anew once it has ended.
		select {
		case <-w.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		a, l, w = c.attach(action, executionID)
	}
	switch {
	case a == nil:
		return nil, ErrClosed
	case l != nil:
		return l, nil
	case w != nil:
		return c.wait(ctx, w)
	}
	if err := c.ensurePolicies(ctx); err != nil {
		return nil, err
	}
	c.noteAction(ctx, action)

	rep, err := c.enqueue(ctx, a, executionID)
	if err != nil {
		if errors.Is(err, ErrNotReplicated) {
			c.undoEnqueue(a, executionID, rep)
		}
		return nil, err
	}
	c.schedule(ctx, action, rep.Due, rep.Wake)
	switch rep.Status {
	case scripts.Full:
		return nil, fmt.Errorf("%w: %s holds %d waiting executions", ErrQueueFull, action, c.opts.MaxQueueLength)
	case scripts.OverQuota:
		return nil, &QuotaError{Action: action, Quota: rep.Quota, Source: rep.QuotaSource, RetryAt: time.UnixMilli(rep.RetryAt)}
	case scripts.Admitted, scripts.Running:
		for {
			a := c.action(action)
			if a == nil {
				l := &Lease{c: c, action: action, id: executionID, fence: rep.Fence, seq: rep.Seq, lost: make(chan struct{})}
				l.markLost()
				return l, nil
			}
			a.mu.Lock()
			if !a.dead {
				l := a.addLeaseLocked(executionID, rep.Fence, rep.Seq, time.Now())
				a.mu.Unlock()
				return l, nil
			}
			a.mu.Unlock()
		}
	}
	for {
		a := c.action(action)
		if a == nil {
			c.cancelQueued(c.keys.Action(action), executionID, rep.Seq)
			return nil, ErrClosed
		}
		a.mu.Lock()
		if a.dead { // the heartbeat dropped the idle entry meanwhile
			a.mu.Unlock()
			continue
		}
		if c.isClosed() {
			a.mu.Unlock()
			c.cancelQueued(a.keys, executionID, rep.Seq)
			return nil, ErrClosed
		}
		if old := a.waiters[executionID]; old != nil && old.seq < rep.Seq {
			// Another call of this process queued the execution first, and
			// that entry left Redis (canceled, timed out, granted) before
			// this call's enqueue made a new one. This call joins the first,
			// as a call that finds the execution waiting does, and shares its
			// outcome. Nobody here would ever read the newer entry's tokens,
			// so it goes.
			w := a.addWaiterLocked(executionID, old.seq)
			a.mu.Unlock()
			c.startUnlessClosed(func() { c.dropEntry(a, executionID, strconv.FormatInt(rep.Seq, 10)) })
			return c.wait(ctx, w)
		}
		w := a.addWaiterLocked(executionID, rep.Seq)
		a.mu.Unlock()
		return c.wait(ctx, w)
	}
}

// attach finds what this process already has for the execution: its lease,
// or its waiter (one more caller shares it). a is nil once closed.
func (c *Coordinator) attach(ref, id string) (a *action, l *Lease, w *waiter) {
	for {
		a = c.action(ref)
		if a == nil {
			return nil, nil, nil
		}
		a.mu.Lock()
		if a.dead {
			a.mu.Unlock()
			continue
		}
		defer a.mu.Unlock()
		if l := a.leases[id]; l != nil {
			return a, l, nil
		}
		if w := a.waiters[id]; w != nil {
			if w.refs == 0 { // being given up for callers that left: not joinable
				return a, nil, w
			}
			w.refs++
			return a, nil, w
		}
		return a, nil, nil
	}
}

// wait blocks for the waiter's result or the caller's context. When the
// last caller of a waiter leaves, the waiter gives up before wait returns
// (if Redis does not answer, the removal is retried in the background).
func (c *Coordinator) wait(ctx context.Context, w *waiter) (*Lease, error) {
	select {
	case <-w.done:
		return w.lease, w.err
	case <-ctx.Done():
	}
	a := w.act
	a.mu.Lock()
	if w.state == waiterDone {
		a.mu.Unlock()
		<-w.done
		return w.lease, w.err
	}
	w.refs--
	if w.refs > 0 {
		a.mu.Unlock()
		return nil, ctx.Err()
	}
	// The last caller left: give up in the same step, so that a grant
	// arriving now is given back by the script, not delivered to nobody.
	eff, _ := w.step(evGiveUp, 0, "", ctx.Err())
	if eff == doRunGiveUp && w.timer != nil {
		w.timer.Stop()
	}
	a.mu.Unlock()
	if eff == doRunGiveUp { // removed before returning, so the caller sees it gone
		c.giveUp(w, ctx.Err())
	}
	<-w.done // a give-up already in flight (a timeout check) finishes it
	return nil, ctx.Err()
}

// giveUp runs the give-up script of a waiter in givingUp: timeout.lua for a
// queue timeout, cancel.lua otherwise, and applies its result.
func (c *Coordinator) giveUp(w *waiter, why error) {
	a := w.act
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	if errors.Is(why, ErrQueueTimeout) {
		r, err := scripts.Timeout(ctx, c.run, a.keys, w.id, w.seqStr, c.owner, c.opts.QueueTimeout, c.opts.AckTimeout)
		switch {
		case err != nil:
			c.log.Warn("baton: timing out a wait; retrying as a cancel", slog.String("action", a.ref),
				slog.String("execution", w.id), slog.Any("error", err))
			a.apply(w, evGiveUpFailed, 0, "", nil)
		case r.Result == scripts.Early:
			a.apply(w, evEarly, max(r.Remaining.Milliseconds(), 1), "", nil)
		case r.Result == scripts.Gone:
			a.apply(w, evGone, 0, "", nil)
		default:
			a.apply(w, evGaveUp, 0, "", nil)
		}
		c.schedule(ctx, a.ref, r.Due, r.Wake)
		return
	}
	r, err := scripts.Cancel(ctx, c.run, a.keys, w.id, w.seqStr, c.owner, c.opts.AckTimeout)
	switch {
	case err != nil:
		c.log.Warn("baton: giving up a wait; retrying", slog.String("action", a.ref),
			slog.String("execution", w.id), slog.Any("reason", why), slog.Any("error", err))
		a.apply(w, evGiveUpFailed, 0, "", nil)
	case r.Result == scripts.NotCanceled:
		a.apply(w, evGone, 0, "", nil)
	default:
		a.apply(w, evGaveUp, 0, "", nil)
	}
	c.schedule(ctx, a.ref, r.Due, r.Wake)
}

// retryCancel removes a waiter whose give-up could not reach Redis, retrying
// until it lands or the Coordinator closes, so a live process leaves no
// entry behind in the queue.
func (c *Coordinator) retryCancel(a *action, w *waiter) {
	if c.sleep(backoff(0)) {
		c.dropEntry(a, w.id, w.seqStr)
	}
}

// dropEntry removes this process's entry of the execution with seq
// (cancel.lua, which matches the seq: an entry queued since is left alone;
// a grant it already got is given back). A call that fails is tried again
// until one lands or the Coordinator closes (or the action is in another
// key schema, which no retry changes).
func (c *Coordinator) dropEntry(a *action, id, seq string) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		r, err := scripts.Cancel(ctx, c.run, a.keys, id, seq, c.owner, c.opts.AckTimeout)
		cancel()
		if err == nil {
			c.schedule(c.ctx, a.ref, r.Due, r.Wake)
			return
		}
		if errors.Is(err, ErrKeySchema) { // no retry helps; failover errors (READONLY, LOADING) do pass
			c.log.Warn("baton: removing a queue entry", slog.String("action", a.ref), slog.String("execution", id),
				slog.Any("error", err))
			return
		}
		if !c.sleep(backoff(attempt + 1)) {
			return
		}
	}
}

// giveBackOrphan returns a grant that no local waiter wants any more (its
// waiter ended first), so that the slot passes on at once.
func (c *Coordinator) giveBackOrphan(a *action, id, seq string) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	r, err := scripts.Cancel(ctx, c.run, a.keys, id, seq, c.owner, c.opts.AckTimeout)
	if err != nil {
		c.log.Warn("baton: giving back an unclaimed grant", slog.String("action", a.ref), slog.String("execution", id), slog.Any("error", err))
		return
	}
	c.schedule(ctx, a.ref, r.Due, r.Wake)
}

// releaseFence frees a slot granted to a waiter that gave up after the grant
// became a lease (rare: the grant's deadline passed while the give-up ran).
func (c *Coordinator) releaseFence(ref, id string, fence int64) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if _, err := c.release(ctx, ref, id, fence); err != nil {
		c.log.Warn("baton: releasing a grant nobody waits for", slog.String("action", ref), slog.String("execution", id), slog.Any("error", err))
	}
}

func (c *Coordinator) releaseAbandoned(l *Lease) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil && !errors.Is(err, ErrLeaseLost) {
		c.log.Warn("baton: releasing a lease its caller abandoned", slog.String("action", l.action),
			slog.String("execution", l.id), slog.Any("error", err))
	}
}

// undoEnqueue takes back an admission or queueing that the master made but
// too few replicas acknowledged (WaitReplicas), since its caller is told it
// failed: the slot is released, the waiter removed. A re-attach (Running)
// is left alone: that lease was granted earlier and may be in use. The undo
// is itself a write that may not be replicated in time; if it is lost, the
// slot comes back when its lease expires (nobody renews it), and a lost
// queue entry's grant is dropped, its process not waiting for it.
func (c *Coordinator) undoEnqueue(a *action, id string, rep scripts.EnqueueReply) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	var err error
	switch rep.Status {
	case scripts.Admitted:
		var r scripts.ReleaseReply
		r, err = scripts.Release(ctx, c.run, a.keys, id, rep.Fence, c.opts.AckTimeout, scripts.Policy{Version: -1})
		c.schedule(ctx, a.ref, r.Due, r.Wake)
	case scripts.Queued:
		var r scripts.CancelReply
		r, err = scripts.Cancel(ctx, c.run, a.keys, id, fmt.Sprint(rep.Seq), c.owner, c.opts.AckTimeout)
		c.schedule(ctx, a.ref, r.Due, r.Wake)
	}
	if err != nil {
		c.log.Warn("baton: undoing an admission that was not replicated", slog.String("execution", id), slog.Any("error", err))
	}
}

// enqueue runs enqueue.lua for a new request. A call whose outcome is
// unknown (the connection failed once it was sent, as when a connection is
// killed or a failover starts, or could not be made) is sent again: the
// script is idempotent per execution ID, so the retry finds the execution
// where the lost call left it (waiting in its place, or admitted, with the
// same token) and never takes a second place, token or quota reservation. A
// dropped connection thus ends no live request with an error. The retries
// stop when ctx ends (the context's error), when the Coordinator closes
// (ErrClosed), or once Redis has been unreachable for LeaseTTL, by which
// time this process's heartbeat has lapsed too (the last error); then
// whatever the lost call may have stored is taken back in the background.
func (c *Coordinator) enqueue(ctx context.Context, a *action, id string) (scripts.EnqueueReply, error) {
	var giveUpAt time.Time // set at the first unknown outcome
	settle := func() {
		if !giveUpAt.IsZero() {
			c.startUnlessClosed(func() { c.settleUnknown(a, id) })
		}
	}
	for attempt := 0; ; attempt++ {
		rep, err := scripts.Enqueue(ctx, c.run, a.keys, scripts.EnqueueArgs{
			Execution: id, Owner: c.owner, MaxQueue: c.opts.MaxQueueLength,
			LeaseTTL: c.opts.LeaseTTL, AckTimeout: c.opts.AckTimeout, Policy: c.policyArgs(a.ref),
		})
		if err == nil {
			return rep, nil
		}
		err = fmt.Errorf("baton: enqueue %s/%s: %w", a.ref, id, err)
		if errors.Is(err, ErrNotReplicated) {
			return rep, err // the caller undoes it
		}
		if !outcomeUnknown(err) {
			settle()
			return rep, err
		}
		if giveUpAt.IsZero() {
			giveUpAt = time.Now().Add(c.opts.LeaseTTL)
		}
		if !time.Now().Before(giveUpAt) {
			settle()
			return rep, err
		}
		c.log.Debug("baton: enqueue's outcome unknown; sending it again", slog.String("action", a.ref),
			slog.String("execution", id), slog.Any("error", err))
		t := time.NewTimer(backoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			settle()
			return rep, ctx.Err()
		case <-c.stop:
			t.Stop()
			return rep, ErrClosed
		}
	}
}

// outcomeUnknown reports an error after which the script may have run: the
// connection failed once the call was sent (a context error means the call
// never left; an error reply means Redis refused or the script failed; a
// closed client sends nothing).
func outcomeUnknown(err error) bool {
	var re redis.Error
	return !errors.As(err, &re) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, redis.ErrClosed)
}

// settleUnknown cleans up after an enqueue whose reply was lost (a
// connection that died, a failover): the execution may be waiting, or
// holding a slot, under this process's owner, with nobody here waiting for
// it. A waiter nobody reads would stall the queue (its grant goes back to
// the head while its process is alive); a slot nobody renews would be held
// until its lease expires. Unless the caller retried meanwhile (the
// execution is known here again), it is removed or released.
func (c *Coordinator) settleUnknown(a *action, id string) {
	for attempt := 0; attempt < 8; attempt++ {
		if !c.sleep(backoff(attempt)) {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		st, err := scripts.State(ctx, c.run, a.keys, id)
		if err == nil && st.Owner == c.owner && !c.knows(a.ref, id) {
			switch st.Status {
			case "waiting":
				var r scripts.CancelReply
				r, err = scripts.Cancel(ctx, c.run, a.keys, id, strconv.FormatInt(st.Seq, 10), c.owner, c.opts.AckTimeout)
				c.schedule(ctx, a.ref, r.Due, r.Wake)
			case "running":
				var r scripts.ReleaseReply
				r, err = scripts.Release(ctx, c.run, a.keys, id, st.Fence, c.opts.AckTimeout, scripts.Policy{Version: -1})
				c.schedule(ctx, a.ref, r.Due, r.Wake)
			}
			if err == nil && st.Status != "unknown" {
				c.log.Warn("baton: took back an execution whose enqueue reply was lost", slog.String("action", a.ref),
					slog.String("execution", id), slog.String("was", st.Status))
			}
		}
		cancel()
		if err == nil {
			return
		}
	}
}

// knows reports whether this process waits for or holds the execution.
func (c *Coordinator) knows(ref, id string) bool {
	c.amu.Lock()
	a := c.actions[ref]
	c.amu.Unlock()
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.waiters[id] != nil || a.leases[id] != nil
}

// cancelQueued removes an execution queued just as the Coordinator closed.
func (c *Coordinator) cancelQueued(k keys.Action, id string, seq int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	if _, err := scripts.Cancel(ctx, c.run, k, id, fmt.Sprint(seq), c.owner, c.opts.AckTimeout); err != nil {
		c.log.Warn("baton: canceling on close", slog.String("execution", id), slog.Any("error", err))
	}
}

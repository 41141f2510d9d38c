package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/batonhq/baton/scripts"
)

// EnqueueAndWait blocks until executionID may start as an execution of the
// action, then returns its lease. The caller runs the execution and then
// calls Lease.Release (or NotifyCompletion).
//
// With a free slot and nobody waiting it returns after one script call.
// Otherwise the execution waits in the action's FIFO queue. It ends with
// ErrQueueFull (nothing stored), ErrQueueTimeout, ErrCanceled, ErrLeaseLost,
// ErrClosed, or the context's error; in each case it is out of the queue and
// holds no slot.
//
// Calling it again with an ID that is already waiting keeps the ID's place
// and returns the same grant; with an ID that is running it returns its
// lease. This is how a redelivered request re-attaches.
func (c *Coordinator) EnqueueAndWait(ctx context.Context, action, executionID string) (*Lease, error) {
	if err := validate(action, executionID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	as := c.actionLocked(action)
	if l := as.leases[executionID]; l != nil {
		c.mu.Unlock()
		return l, nil
	}
	if w := as.waiters[executionID]; w != nil {
		w.refs++
		c.mu.Unlock()
		return c.wait(ctx, w)
	}
	c.mu.Unlock()
	if err := c.ensurePolicies(ctx); err != nil {
		return nil, err
	}
	c.noteAction(ctx, action)

	grantKey := as.keys.grant(c.owner, executionID)
	args := append([]any{executionID, c.owner, c.opts.MaxQueueLength, c.ms(c.opts.LeaseTTL), c.ms(c.opts.AckTimeout)},
		c.policyArgs(action)...)
	v, err := scripts.Enqueue.Run(ctx, c.rdb, as.keys.with(grantKey), args...).Result()
	if err != nil {
		return nil, fmt.Errorf("baton: enqueue %s/%s: %w", action, executionID, err)
	}
	r := newReply("enqueue", v, 4)
	status, fence, seqStr, due := r.str(0), r.int(1), r.str(2), r.int(3)
	if r.err != nil {
		return nil, r.err
	}
	c.addDue(ctx, action, due)
	switch status {
	case "admitted", "running":
		return c.addLease(action, executionID, fence, parseInt(seqStr)), nil
	case "full":
		return nil, fmt.Errorf("%w: %s holds %d waiting executions", ErrQueueFull, action, c.opts.MaxQueueLength)
	case "queued":
	default:
		return nil, fmt.Errorf("baton: enqueue: unknown status %q", status)
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.cancelQueued(as, executionID, seqStr)
		return nil, ErrClosed
	}
	as = c.actionLocked(action) // the heartbeat may have dropped the idle entry meanwhile
	w, isNew, wake := as.addWaiterLocked(executionID, parseInt(seqStr), seqStr, grantKey)
	if isNew {
		c.armTimeoutLocked(w, c.opts.QueueTimeout)
		if !as.loopRunning {
			as.loopRunning = true
			c.start(func() { c.waitLoop(as) })
		}
	}
	c.mu.Unlock()
	if wake {
		c.wake(as)
	}
	return c.wait(ctx, w)
}

// wait blocks for the waiter's result or the caller's context.
func (c *Coordinator) wait(ctx context.Context, w *waiter) (*Lease, error) {
	select {
	case <-w.done:
		return w.lease, w.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if w.state == stateDone {
		c.mu.Unlock()
		return w.lease, w.err
	}
	w.refs--
	if w.refs > 0 {
		c.mu.Unlock()
		return nil, ctx.Err()
	}
	if w.state != stateWaiting {
		// A grant is being acknowledged, or a timeout is in flight: take its
		// outcome, and pass on a slot nobody will use now.
		c.mu.Unlock()
		if l, _ := w.result(); l != nil {
			c.releaseAbandoned(l)
		}
		return nil, ctx.Err()
	}
	w.state = stateEnding
	c.mu.Unlock()
	c.giveUp(w, ctx.Err())
	if l, _ := w.result(); l != nil {
		c.releaseAbandoned(l)
	}
	return nil, ctx.Err()
}

func (c *Coordinator) releaseAbandoned(l *Lease) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil && !errors.Is(err, ErrLeaseLost) {
		c.log.Warn("baton: releasing a lease its caller abandoned", slog.String("action", l.action),
			slog.String("execution", l.id), slog.Any("error", err))
	}
}

// armTimeoutLocked starts the waiter's queue timeout. The local timer only
// says when to ask; timeout.lua decides on the Redis clock.
func (c *Coordinator) armTimeoutLocked(w *waiter, d time.Duration) {
	if c.opts.QueueTimeout < 0 {
		return
	}
	w.timer = time.AfterFunc(d, func() {
		c.mu.Lock()
		if w.state != stateWaiting {
			c.mu.Unlock()
			return
		}
		w.state = stateEnding
		c.mu.Unlock()
		c.giveUp(w, ErrQueueTimeout)
	})
}

// giveUp ends a waiter in stateEnding with why (ErrQueueTimeout: only once
// the timeout has passed on the Redis clock). A grant that arrives meanwhile
// is stashed; if the waiter turns out not to be over, the stash is replayed.
func (c *Coordinator) giveUp(w *waiter, why error) {
	as := w.as
	ack := c.ms(c.opts.AckTimeout)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
		var status string
		var retryIn, due int64
		var err error
		if errors.Is(why, ErrQueueTimeout) {
			var v any
			v, err = scripts.Timeout.Run(ctx, c.rdb, as.keys.with(),
				w.id, w.seqStr, c.owner, c.ms(c.opts.QueueTimeout), ack).Result()
			if err == nil {
				r := newReply("timeout", v, 3)
				status, retryIn, due, err = r.str(0), r.int(1), r.int(2), r.err
			}
		} else {
			var v any
			v, err = scripts.Cancel.Run(ctx, c.rdb, as.keys.with(), w.id, w.seqStr, c.owner, ack).Result()
			if err == nil {
				r := newReply("cancel", v, 2)
				status, due, err = r.str(0), r.int(1), r.err
			}
		}
		cancel()
		if err != nil {
			c.log.Warn("baton: giving up a wait", slog.String("action", as.ref), slog.String("execution", w.id),
				slog.Any("reason", why), slog.Any("error", err))
			if !errors.Is(why, ErrQueueTimeout) || attempt >= 20 {
				// The caller is gone or Redis stays down: end locally. If the
				// execution is granted later, the wait loop gives it back.
				c.finish(w, nil, why)
				return
			}
			time.Sleep(backoff(attempt))
			continue
		}
		c.addDue(c.ctx, as.ref, due)
		if status == "early" {
			c.mu.Lock()
			w.state = stateWaiting
			stash := w.stash
			w.stash = nil
			if len(stash) == 0 {
				c.armTimeoutLocked(w, time.Duration(retryIn)*time.Millisecond)
			}
			c.mu.Unlock()
			for _, tok := range stash {
				c.handleToken(as, w.id, tok, false)
			}
			return
		}
		if status == "gone" && w.gone < 2 {
			// Not waiting and no grant to give back: a token (cancel,
			// eviction, supersession, reclaimed grant) is on its way or
			// stashed. Replay the stash; ask again later in case the token
			// was lost, and end the wait the second time it is still gone.
			c.mu.Lock()
			w.state = stateWaiting
			w.gone++
			stash := w.stash
			w.stash = nil
			if len(stash) == 0 {
				c.armTimeoutLocked(w, c.opts.AckTimeout)
			}
			c.mu.Unlock()
			for _, tok := range stash {
				c.handleToken(as, w.id, tok, false)
			}
			return
		}
		c.finish(w, nil, why)
		return
	}
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, time.Second)
}

// finish ends a waiter and wakes the wait loop if it blocks on its key.
func (c *Coordinator) finish(w *waiter, lease *Lease, err error) {
	c.mu.Lock()
	wake := w.as.finishLocked(w, lease, err)
	c.mu.Unlock()
	if wake {
		c.wake(w.as)
	}
}

// cancelQueued removes an execution queued just as the Coordinator closed.
func (c *Coordinator) cancelQueued(as *actionState, id, seq string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	if err := scripts.Cancel.Run(ctx, c.rdb, as.keys.with(), id, seq, c.owner, c.ms(c.opts.AckTimeout)).Err(); err != nil {
		c.log.Warn("baton: canceling on close", slog.String("action", as.ref), slog.String("execution", id), slog.Any("error", err))
	}
}

package coordinator

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/scripts"
)

// maxBlockKeys bounds the grant keys one BLPOP waits on: those of the
// action's oldest local waiters.
const maxBlockKeys = 16

// action is this process's view of one action: its waiters, its leases and
// the loop that delivers their grants. Its mutex guards all of it.
type action struct {
	c    *Coordinator
	ref  string
	keys keys.Action

	mu      sync.Mutex
	dead    bool               // dropped from the Coordinator's table; make a new one
	waiters map[string]*waiter // by execution ID
	order   waiterHeap         // the same waiters, oldest (lowest seq) first
	leases  map[string]*Lease  // by execution ID
	looping bool               // the wait loop runs

	// blocking holds the waiters whose grant keys the wait loop's BLPOP in
	// flight waits on (nil between rounds); woken says that round was
	// already told to look again (wakeIfStaleLocked).
	blocking map[string]*waiter
	woken    bool
}

func newAction(c *Coordinator, ref string) *action {
	return &action{c: c, ref: ref, keys: c.keys.Action(ref), waiters: map[string]*waiter{}, leases: map[string]*Lease{}}
}

// idleLocked reports whether nothing of the action is left in this process.
func (a *action) idleLocked() bool {
	return len(a.waiters) == 0 && len(a.leases) == 0 && !a.looping
}

// addWaiterLocked registers a queued execution, or returns the waiter that
// another call registered for it meanwhile, and starts the wait loop.
func (a *action) addWaiterLocked(id string, seq int64) *waiter {
	if w := a.waiters[id]; w != nil {
		w.refs++
		return w
	}
	w := &waiter{act: a, id: id, seq: seq, seqStr: strconv.FormatInt(seq, 10), key: a.keys.Grant(a.c.owner, id),
		refs: 1, done: make(chan struct{})}
	a.waiters[id] = w
	heap.Push(&a.order, w)
	a.armLocked(w, a.c.opts.QueueTimeout)
	a.wakeIfStaleLocked()
	if !a.looping {
		a.looping = true
		a.c.start(a.waitLoop)
	}
	return w
}

// armLocked starts the waiter's queue timeout. The local timer only says
// when to ask; timeout.lua decides on the Redis clock.
func (a *action) armLocked(w *waiter, d time.Duration) {
	if a.c.opts.QueueTimeout < 0 {
		return
	}
	w.timer = time.AfterFunc(d, func() { a.apply(w, evGiveUp, 0, "", ErrQueueTimeout) })
}

// finishLocked ends a waiter with its one result and takes it out of the tables.
func (a *action) finishLocked(w *waiter, lease *Lease, err error) {
	w.lease, w.err = lease, err
	if w.timer != nil {
		w.timer.Stop()
	}
	if a.waiters[w.id] == w {
		delete(a.waiters, w.id)
		heap.Remove(&a.order, w.index)
		a.wakeIfStaleLocked()
	}
	close(w.done)
}

// wakeIfStaleLocked interrupts the wait loop's BLPOP in flight when it no
// longer waits on the grant key of the action's oldest local waiter. Grants
// come in FIFO order, so while the oldest waiter's key is among those the
// BLPOP waits on, that key's token is the first to come and ends the round,
// and the loop then waits on the newer ones. Otherwise the round would
// block until BlockTimeout while the oldest waiter's grant sits unread: past
// AckTimeout it goes back to the head of the queue and is granted again
// later, under a new fencing token, after grants made meanwhile to newer
// waiters. That happens when the oldest waiter was added after the round
// began with a lower seq than those it waits on (enqueue replies, or a
// re-attach, handled out of seq order), or when the waiters it waits on
// ended by another path than its BLPOP (a heartbeat or reconcile that
// delivered a grant, a give-up that gave one back) while newer ones arrived.
// One wake per round is enough: the loop re-reads every waiter.
func (a *action) wakeIfStaleLocked() {
	if a.blocking == nil || a.woken || len(a.order) == 0 {
		return
	}
	if oldest := a.order[0]; a.blocking[oldest.key] == oldest {
		return
	}
	a.woken = true
	c := a.c
	if c.isClosed() {
		return // Close wakes every loop itself
	}
	c.start(func() { c.wake(a) })
}

// apply runs one event through the waiter's state machine and does what it
// says. received is the local time a grant's wait began (for the lease's
// renewal clock); zero means now.
func (a *action) apply(w *waiter, ev waiterEvent, fence int64, kind string, why error) {
	a.applyAt(w, ev, fence, kind, why, time.Time{})
}

// applyAt is apply with the local time a grant's wait began.
func (a *action) applyAt(w *waiter, ev waiterEvent, fence int64, kind string, why error, received time.Time) {
	c := a.c
	a.mu.Lock()
	eff, err := w.step(ev, fence, kind, why)
	var lease *Lease
	switch eff {
	case doDeliver:
		if ev != evGrant {
			fence = w.stashed
		}
		if received.IsZero() {
			received = time.Now()
		}
		lease = a.addLeaseLocked(w.id, fence, w.seq, received)
		a.finishLocked(w, lease, nil)
	case doFail, doReleaseGrant, doRetryGiveUp:
		a.finishLocked(w, nil, err)
	case doRunGiveUp:
		if w.timer != nil {
			w.timer.Stop()
		}
	case doRearm:
		a.armLocked(w, time.Duration(fence)*time.Millisecond)
	}
	refs := w.refs
	stashed := w.stashed
	a.mu.Unlock()

	switch eff {
	case doDeliver:
		if refs == 0 { // every caller left as it arrived
			c.start(func() { c.releaseAbandoned(lease) })
		}
	case doRunGiveUp:
		c.start(func() { c.giveUp(w, why) })
	case doReleaseGrant:
		c.start(func() { c.releaseFence(a.ref, w.id, stashed) })
	case doRetryGiveUp:
		c.start(func() { c.retryCancel(a, w) })
	case doGiveBackOrphan:
		c.start(func() { c.giveBackOrphan(a, w.id, w.seqStr) })
	}
}

// giveUpAll moves every waiting waiter to givingUp for why (Close) and
// returns them; their give-up scripts are the caller's to run.
func (a *action) giveUpAll(why error) []*waiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*waiter
	for _, w := range a.waiters {
		if eff, _ := w.step(evGiveUp, 0, "", why); eff == doRunGiveUp {
			if w.timer != nil {
				w.timer.Stop()
			}
			out = append(out, w)
		}
	}
	return out
}

// addLeaseLocked records a lease this process holds, or returns the one
// already recorded for the same grant.
func (a *action) addLeaseLocked(id string, fence, seq int64, renewed time.Time) *Lease {
	if l := a.leases[id]; l != nil && l.fence == fence {
		return l
	}
	l := &Lease{c: a.c, action: a.ref, id: id, fence: fence, seq: seq, lost: make(chan struct{}), renewedAt: renewed}
	if a.c.isClosed() {
		l.markLost()
		return l
	}
	a.leases[id] = l
	return l
}

func (a *action) loseLeases() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, l := range a.leases {
		delete(a.leases, id)
		l.markLost()
	}
}

// waitLoop delivers the grants of this action to this process's waiters.
// It blocks (BLPOP, finite server-side timeout) on the grant keys of the
// oldest local waiters, since grants of an action come in FIFO order, and on
// the wake key. A grant is delivered as soon as its token is read: nothing
// else is waited for, so a burst of grants reaches its waiters one BLPOP
// each. After an error on the wait connection (a popped token's reply may be
// lost) it reconciles the waiters with Redis before blocking again. It runs
// while the action has local waiters.
func (a *action) waitLoop() {
	c := a.c
	wakeKey := a.keys.Wake(c.owner)
	byKey := map[string]*waiter{}
	blockKeys := make([]string, 0, maxBlockKeys+1)
	for attempt := 0; ; {
		a.mu.Lock()
		if c.isClosed() || len(a.order) == 0 {
			a.looping = false
			a.mu.Unlock()
			return
		}
		clear(byKey)
		blockKeys = blockKeys[:0]
		for _, w := range a.oldestLocked(maxBlockKeys) {
			byKey[w.key] = w
			blockKeys = append(blockKeys, w.key)
		}
		a.blocking, a.woken = byKey, false
		a.mu.Unlock()
		blockKeys = append(blockKeys, wakeKey)

		if !c.acquireWaitConn() {
			continue // closing: the top of the loop returns
		}
		sent := time.Now()
		res, err := c.blpop(blockKeys)
		c.releaseWaitConn()
		a.mu.Lock()
		a.blocking = nil
		a.mu.Unlock()
		if errors.Is(err, redis.Nil) {
			attempt = 0
			continue
		}
		if err != nil {
			if c.isClosed() {
				continue
			}
			c.log.Warn("baton: waiting for a grant; reconciling with Redis", slog.String("action", a.ref), slog.Any("error", err))
			if !c.sleep(backoff(attempt)) {
				continue
			}
			attempt++
			a.reconcile()
			continue
		}
		attempt = 0
		if len(res) != 2 {
			continue
		}
		if res[0] == wakeKey {
			a.handleWake(res[1], byKey)
			continue
		}
		a.handleToken(byKey[res[0]], res[0], res[1], sent)
	}
}

// oldestLocked returns up to n waiters, oldest (lowest seq) first. The
// order matters: when several of their grant keys hold a token as BLPOP
// starts, BLPOP pops from the first key in argument order, so the oldest
// grant is delivered first.
func (a *action) oldestLocked(n int) []*waiter {
	out := make([]*waiter, len(a.order))
	copy(out, a.order)
	slices.SortFunc(out, func(x, y *waiter) int { return cmp.Compare(x.seq, y.seq) })
	return out[:min(n, len(out))]
}

// handleToken applies one token read from a grant key: "g:<seq>:<fence>" or
// "<kind>:<seq>" (see scripts/lib.lua). A token of an older incarnation is
// ignored, except a grant, which is given back.
func (a *action) handleToken(w *waiter, key, raw string, sent time.Time) {
	kind, rest, _ := strings.Cut(raw, ":")
	seq, fenceStr, _ := strings.Cut(rest, ":")
	if w == nil || w.seqStr != seq {
		if kind == "g" {
			id := strings.TrimPrefix(key, a.keys.Grant(a.c.owner, ""))
			a.c.start(func() { a.c.giveBackOrphan(a, id, seq) })
		}
		return
	}
	if kind == "g" {
		if a.c.opts.WaitReplicas > 0 {
			// Another process's release wrote this grant, and BLPOP woke
			// before any replica had it. Reconcile turns it into a lease with
			// a write of our own, followed by WAIT: delivered only once the
			// replicas have it (and everything before it); if a failover
			// lost it, the waiter is found still queued, or missing.
			a.reconcileWaiters([]*waiter{w})
			return
		}
		fence, _ := strconv.ParseInt(fenceStr, 10, 64)
		a.applyAt(w, evGrant, fence, "", nil, sent)
		return
	}
	a.apply(w, evRemoved, 0, kind, nil)
}

// handleWake applies a token read from the wake key: "wake" (re-read the
// waiters) or "x:<id>" (a waiter got a removal token, from another process's
// cancel or re-attach; if the loop is not blocking on its key, look now).
func (a *action) handleWake(raw string, blocking map[string]*waiter) {
	id, ok := strings.CutPrefix(raw, "x:")
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.waiters[id]
	a.mu.Unlock()
	if w == nil || blocking[w.key] == w {
		return
	}
	a.reconcileWaiters([]*waiter{w})
}

// reconcile reads where every local waiter stands (after an error on the
// wait connection, or when a heartbeat found one missing), and applies it.
// It retries until Redis answers or the Coordinator closes.
func (a *action) reconcile() {
	a.mu.Lock()
	ws := make([]*waiter, 0, len(a.order))
	ws = append(ws, a.order...)
	a.mu.Unlock()
	a.reconcileWaiters(ws)
}

// reconcileWaiters is reconcile for some waiters.
func (a *action) reconcileWaiters(all []*waiter) {
	c := a.c
	a.mu.Lock()
	ws := make([]*waiter, 0, len(all))
	pending := make([]scripts.Pending, 0, len(all))
	for _, w := range all {
		if w.state == waiterQueued || w.state == waiterSuspect {
			ws = append(ws, w)
			pending = append(pending, scripts.Pending{Execution: w.id, Seq: w.seqStr})
		}
	}
	a.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		st, err := scripts.Reconcile(ctx, c.run, a.keys, c.owner, c.opts.LeaseTTL, pending)
		cancel()
		if err == nil {
			for i, s := range st {
				a.applyStatus(ws[i], s)
			}
			return
		}
		c.log.Warn("baton: reconciling waiters", slog.String("action", a.ref), slog.Any("error", err))
		if !c.sleep(backoff(attempt)) {
			return
		}
	}
}

// applyStatus applies a state read of one waiter.
func (a *action) applyStatus(w *waiter, s scripts.WaiterStatus) {
	switch s.Status {
	case scripts.WaiterQueued:
		a.apply(w, evPresent, 0, "", nil)
	case scripts.WaiterGranted:
		a.apply(w, evGrant, s.Fence, "", nil)
	case scripts.WaiterMissing:
		a.apply(w, evMissing, 0, "", nil)
	case "":
	default:
		a.apply(w, evRemoved, 0, s.Status, nil)
	}
}

// blpop waits for a token on keys (the last is the wake key). Alone on its
// connection it blocks for BlockTimeout. When other actions' loops queue for
// a blocking connection, it blocks only for a share of AckTimeout, so that
// every loop gets its turn, and reads its grants, well before their
// deadline: a full rotation of the queue takes about AckTimeout/4.
func (c *Coordinator) blpop(keys []string) ([]string, error) {
	queued := int(c.waitQueue.Load())
	if queued == 0 {
		return c.waitRdb.BLPop(c.ctx, c.opts.BlockTimeout, keys...).Result()
	}
	rounds := 1 + (queued+c.opts.MaxWaitConns-1)/c.opts.MaxWaitConns
	share := max(c.opts.AckTimeout/4/time.Duration(rounds), 10*time.Millisecond)
	share = min(share, c.opts.BlockTimeout)
	args := make([]any, 0, len(keys)+2)
	args = append(args, "BLPOP")
	for _, k := range keys {
		args = append(args, k)
	}
	// BLPOP takes fractional seconds; go-redis's BLPop helper rounds up to 1 s.
	args = append(args, strconv.FormatFloat(share.Seconds(), 'f', 3, 64))
	return c.waitRdb.Do(c.ctx, args...).StringSlice()
}

// acquireWaitConn takes one of the MaxWaitConns blocking connections. It
// returns false once the Coordinator is closing.
func (c *Coordinator) acquireWaitConn() bool {
	c.waitQueue.Add(1)
	defer c.waitQueue.Add(-1)
	select {
	case c.waitConns <- struct{}{}:
		return true
	case <-c.stop:
		return false
	}
}

func (c *Coordinator) releaseWaitConn() { <-c.waitConns }

// wake interrupts the action's wait loop so that it re-reads its waiters.
func (c *Coordinator) wake(a *action) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	key := a.keys.Wake(c.owner)
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, "wake")
		p.PExpire(ctx, key, time.Minute)
		return nil
	})
	if err != nil {
		c.log.Warn("baton: waking a wait loop", slog.String("action", a.ref), slog.Any("error", err))
	}
}

// sleep waits for d; false when the Coordinator closed first.
func (c *Coordinator) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stop:
		return false
	}
}

// sleepCtx waits for d; false if ctx ended or the Coordinator closed first.
func (c *Coordinator) sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-c.stop:
		return false
	}
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, time.Second)
}

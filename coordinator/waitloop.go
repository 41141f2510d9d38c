package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/scripts"
)

// waitLoop delivers the grants of one action to this process's waiters. It
// blocks (BLPOP, finite server-side timeout) on the grant key of the oldest
// local waiter only, since grants of an action come in FIFO order; removals
// push a token onto the removed waiter's key, and the wake key interrupts the
// block when an older waiter registers or the Coordinator closes. It runs
// while the action has local waiters.
func (c *Coordinator) waitLoop(as *actionState) {
	wakeKey := as.keys.wake(c.owner)
	for attempt := 0; ; {
		c.mu.Lock()
		if c.closed || len(as.order) == 0 {
			as.loopRunning = false
			as.blockingSeq = 0
			c.mu.Unlock()
			return
		}
		w := as.order[0]
		id, key := w.id, w.grantKey
		as.blockingSeq = w.seq
		c.mu.Unlock()

		if !c.acquireWaitConn() {
			continue // closing: the top of the loop returns
		}
		res, err := c.blpop(key, wakeKey)
		c.releaseWaitConn()
		if errors.Is(err, redis.Nil) {
			attempt = 0
			continue
		}
		if err != nil {
			if c.isClosed() {
				continue
			}
			c.log.Warn("baton: waiting for a grant", slog.String("action", as.ref), slog.Any("error", err))
			time.Sleep(backoff(attempt))
			attempt++
			continue
		}
		attempt = 0
		if len(res) != 2 || res[0] == wakeKey {
			continue
		}
		c.handleToken(as, id, res[1], true)
	}
}

// blpop waits for a token on key or wakeKey. Alone on its connection it
// blocks for BlockTimeout. When other actions' loops queue for a blocking
// connection, it blocks only for a share of AckTimeout, so that every loop
// gets its turn, and reads its grant, well before the grant's acknowledgement
// deadline: a full rotation of the queue takes about AckTimeout/4.
func (c *Coordinator) blpop(key, wakeKey string) ([]string, error) {
	queued := int(c.waitQueue.Load())
	if queued == 0 {
		return c.rdb.BLPop(c.ctx, c.opts.BlockTimeout, key, wakeKey).Result()
	}
	rounds := 1 + (queued+c.opts.MaxWaitConns-1)/c.opts.MaxWaitConns
	share := max(c.opts.AckTimeout/4/time.Duration(rounds), 10*time.Millisecond)
	share = min(share, c.opts.BlockTimeout)
	// BLPOP takes fractional seconds; go-redis's BLPop helper rounds up to 1 s.
	v, err := c.rdb.Do(c.ctx, "BLPOP", key, wakeKey, strconv.FormatFloat(share.Seconds(), 'f', 3, 64)).StringSlice()
	return v, err
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

// wake interrupts the action's wait loop so that it re-reads its oldest waiter.
func (c *Coordinator) wake(as *actionState) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	key := as.keys.wake(c.owner)
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, "wake")
		p.PExpire(ctx, key, time.Minute)
		return nil
	})
	if err != nil {
		c.log.Warn("baton: waking a wait loop", slog.String("action", as.ref), slog.Any("error", err))
	}
}

// token is one wake-up read from a grant key: "g:<seq>:<fence>" or
// "<kind>:<seq>" (see scripts/lib.lua).
type token struct {
	kind, seq string
	fence     int64
}

func parseToken(s string) token {
	parts := strings.Split(s, ":")
	t := token{kind: parts[0]}
	if len(parts) > 1 {
		t.seq = parts[1]
	}
	if len(parts) > 2 {
		t.fence = parseInt(parts[2])
	}
	return t
}

// handleToken applies one token to the waiter of execution id. fromLoop is
// true in the wait loop itself, which never needs waking: it moves on by
// itself once the token is handled.
func (c *Coordinator) handleToken(as *actionState, id, raw string, fromLoop bool) {
	t := parseToken(raw)
	c.mu.Lock()
	w := as.waiters[id]
	if w == nil || w.seqStr != t.seq {
		c.mu.Unlock()
		if t.kind == "g" {
			c.giveBackOrphan(as, id, t.seq)
		}
		return
	}
	switch w.state {
	case stateEnding:
		w.stash = append(w.stash, raw)
		c.mu.Unlock()
		return
	case stateWaiting:
	default:
		c.mu.Unlock()
		return
	}
	if t.kind != "g" {
		wake := as.finishLocked(w, nil, tokenError(t.kind, as.ref, id))
		c.mu.Unlock()
		if wake && !fromLoop {
			c.wake(as)
		}
		return
	}
	w.state = stateClaimed
	c.mu.Unlock()

	ok, err := c.ack(as, id, t.fence)
	var lease *Lease
	switch {
	case err != nil:
		err = errors.Join(ErrLeaseLost, err)
	case !ok:
		err = ErrLeaseLost
	default:
		lease = c.addLease(as.ref, id, t.fence, w.seq)
	}
	c.mu.Lock()
	wake := as.finishLocked(w, lease, err)
	c.mu.Unlock()
	if wake && !fromLoop {
		c.wake(as)
	}
}

func tokenError(kind, ref, id string) error {
	switch kind {
	case "c":
		return ErrCanceled
	case "t":
		return ErrQueueTimeout
	case "s":
		return errors.Join(ErrCanceled, errors.New("baton: "+ref+"/"+id+" re-attached by another process"))
	case "e":
		return errors.Join(ErrLeaseLost, errors.New("baton: waiter dropped: its process was presumed dead"))
	}
	return errors.Join(ErrLeaseLost, errors.New("baton: unknown wake-up token "+kind))
}

// ack turns a grant into a lease, retrying (ack.lua is idempotent) for up to
// the acknowledgement deadline.
func (c *Coordinator) ack(as *actionState, id string, fence int64) (bool, error) {
	deadline := time.Now().Add(c.opts.AckTimeout)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithDeadline(context.WithoutCancel(c.ctx), deadline)
		v, err := scripts.Ack.Run(ctx, c.rdb, as.keys.with(),
			id, fence, c.owner, c.ms(c.opts.LeaseTTL), c.ms(c.opts.AckTimeout)).Result()
		cancel()
		if err == nil {
			r := newReply("ack", v, 2)
			ok, due := r.int(0), r.int(1)
			if r.err != nil {
				return false, r.err
			}
			c.addDue(c.ctx, as.ref, due)
			return ok == 1, nil
		}
		if time.Now().Add(backoff(attempt)).After(deadline) {
			return false, err
		}
		time.Sleep(backoff(attempt))
	}
}

// giveBackOrphan returns a grant that no local waiter wants any more (its
// waiter ended first), so that the slot passes on at once instead of after
// the acknowledgement deadline.
func (c *Coordinator) giveBackOrphan(as *actionState, id, seq string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	v, err := scripts.Cancel.Run(ctx, c.rdb, as.keys.with(), id, seq, c.owner, c.ms(c.opts.AckTimeout)).Result()
	if err != nil {
		c.log.Warn("baton: giving back an unclaimed grant", slog.String("action", as.ref), slog.String("execution", id), slog.Any("error", err))
		return
	}
	r := newReply("cancel", v, 2)
	if due := r.int(1); r.err == nil {
		c.addDue(c.ctx, as.ref, due)
	}
}

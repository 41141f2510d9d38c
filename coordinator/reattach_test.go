package coordinator_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// slowScript delays every call of one script (alone or in a pipeline) while
// on, and says when a delayed call starts.
type slowScript struct {
	sha, fn string // the script's EVALSHA hash and Function name
	delay   time.Duration
	on      atomic.Bool
	started chan struct{} // one send per delayed call, dropped when full
}

func (s *slowScript) hit(cmd redis.Cmder) bool {
	args := cmd.Args()
	if !s.on.Load() || len(args) < 2 {
		return false
	}
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		return args[1] == s.sha
	case "fcall":
		return args[1] == s.fn
	}
	return false
}

func (s *slowScript) wait() {
	select {
	case s.started <- struct{}{}:
	default:
	}
	time.Sleep(s.delay)
}

func (s *slowScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (s *slowScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if s.hit(cmd) {
			s.wait()
		}
		return next(ctx, cmd)
	}
}
func (s *slowScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if s.hit(cmd) {
				s.wait()
				break
			}
		}
		return next(ctx, cmds)
	}
}

// TestReattachWhileGivingUp: a caller whose context ends is the last caller
// of its waiter, so the waiter gives up (cancel.lua). A second call with the
// same ID in the same process, made while that give-up is in flight, must
// not end with the first caller's context error: its own context is alive.
// (Found by TestRandomFaults: a re-attach got "context deadline exceeded"
// with a context that had no deadline.)
func TestReattachWhileGivingUp(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		slow := &slowScript{sha: scripts.ByName("cancel").Hash(), fn: scripts.ByName("cancel").Function(), delay: time.Second, started: make(chan struct{}, 1)}
		rdb := e.client()
		rdb.AddHook(slow)
		o := e.opts()
		o.Logger = newTestLog(t, "").logger()
		c, err := coordinator.New(rdb, o)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		const a = "reattach.givingup"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, c, a, 1)[0]

		slow.on.Store(true)
		first := make(chan error, 1)
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		go func() {
			_, err := c.EnqueueAndWait(short, a, "x")
			first <- err
		}()
		select {
		case <-slow.started: // the first caller's context ended; its give-up is in flight
		case <-time.After(10 * time.Second):
			t.Fatal("the first caller's give-up never started")
		}
		type result struct {
			l   *coordinator.Lease
			err error
		}
		second := make(chan result, 1)
		alive, cancelAlive := context.WithTimeout(ctx, 20*time.Second)
		defer cancelAlive()
		go func() {
			l, err := c.EnqueueAndWait(alive, a, "x")
			second <- result{l, err}
		}()
		select {
		case err := <-first:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("first caller: %v, want its context's deadline", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("first caller never returned")
		}
		slow.on.Store(false)
		must(t, holder.Release(ctx))
		select {
		case r := <-second:
			if r.err != nil && alive.Err() == nil && (errors.Is(r.err, context.DeadlineExceeded) || errors.Is(r.err, context.Canceled)) {
				t.Fatalf("second caller (same ID, same process, during the first caller's give-up) ended with "+
					"the first caller's context error %q although its own context is alive", r.err)
			}
			if r.err != nil {
				t.Logf("second caller: %v", r.err)
			} else {
				must(t, r.l.Release(ctx))
			}
		case <-time.After(15 * time.Second):
			t.Fatal("second caller never returned")
		}
	})
}

// TestStaleSupersedeToken: a re-attach keeps the execution's seq, so the
// "s:<seq>" token that tells a process it was superseded looks the same for
// every incarnation of that waiter in that process. Process B waits for x
// (its 17th waiter, so its wait loop does not watch x's key); process A
// re-attaches x, which leaves "s:<seq>" in B's grant key; B's caller leaves
// before B read it (B's give-up finds x owned by A: nothing to do). When B
// re-attaches x later it owns x again in Redis, and its new waiter must not
// be ended by the old token: if it is, x waits in Redis for a process that
// no longer waits for it, and each grant of x goes unread, back to the head
// of the queue, and is granted again, holding a slot while B lives.
func TestStaleSupersedeToken(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		o := e.opts()
		o.AckTimeout = 300 * time.Millisecond
		o.SweepInterval = 50 * time.Millisecond
		o.Logger = newTestLog(t, "").logger()
		cA := e.coordinator(o)
		cB := e.coordinator(o)
		const a = "stale.supersede"
		must(t, cA.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, cA, a, 1)[0]

		// B: 16 older waiters, then x.
		older, cancelOlder := context.WithCancel(ctx)
		defer cancelOlder()
		done := make(chan error, 17)
		for i := 0; i < 16; i++ {
			go func() {
				_, err := cB.EnqueueAndWait(older, a, "older-"+string(rune('a'+i)))
				done <- err
			}()
		}
		eventually(t, 10*time.Second, "16 waiters queued", func() bool { return e.stats(cA, a).QueueLength == 16 })
		xB, cancelXB := context.WithCancel(ctx)
		defer cancelXB()
		firstB := make(chan error, 1)
		go func() { _, err := cB.EnqueueAndWait(xB, a, "x"); firstB <- err }()
		eventually(t, 10*time.Second, "x queued by B", func() bool { return e.stats(cA, a).QueueLength == 17 })

		// A re-attaches x: B is told with "s:<seq>" in its grant key for x.
		xA, cancelXA := context.WithCancel(ctx)
		defer cancelXA()
		firstA := make(chan error, 1)
		go func() { _, err := cA.EnqueueAndWait(xA, a, "x"); firstA <- err }()
		eventually(t, 10*time.Second, "x owned by A", func() bool {
			st, err := cA.ExecutionState(ctx, a, "x")
			return err == nil && st.Owner == cA.Owner()
		})
		// B's caller leaves before B read the token.
		cancelXB()
		select {
		case err := <-firstB:
			t.Logf("B's first call for x: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("B's first call for x never returned")
		}
		cancelOlder()
		for i := 0; i < 16; i++ {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("an older waiter of B never returned")
			}
		}

		// B re-attaches x: B owns it again; A's waiter is superseded.
		xB2, cancelXB2 := context.WithTimeout(ctx, 20*time.Second)
		defer cancelXB2()
		type result struct {
			l   *coordinator.Lease
			err error
		}
		secondB := make(chan result, 1)
		go func() { l, err := cB.EnqueueAndWait(xB2, a, "x"); secondB <- result{l, err} }()
		select {
		case err := <-firstA:
			if !errors.Is(err, coordinator.ErrCanceled) || !errors.Is(err, coordinator.ErrReattached) {
				t.Fatalf("A's call for x after B re-attached it: %v, want ErrReattached (an ErrCanceled)", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("A's call for x was not told that B re-attached it")
		}
		select {
		case r := <-secondB:
			st, _ := cA.ExecutionState(ctx, a, "x")
			// What it costs: with the holder gone, does the next request get the slot?
			must(t, holder.Release(ctx))
			yCtx, cancelY := context.WithTimeout(ctx, 3*time.Second)
			defer cancelY()
			_, yErr := cA.EnqueueAndWait(yCtx, a, "y")
			t.Fatalf("B's re-attach of x ended before any grant with %v (%v), while Redis has x %s for owner %s (B is %s): "+
				"a stale s:<seq> token from B's earlier incarnation of x ended the new waiter. "+
				"A new request y after the holder released, waiting 3s: %v; stats %+v",
				r.err, r.l, st.Status, st.Owner, cB.Owner(), yErr, e.stats(cA, a))
		case <-time.After(3 * time.Second): // still waiting (the wait loop's BLPOP rounds last 1s): right
		}
		must(t, holder.Release(ctx))
		select {
		case r := <-secondB:
			if r.err != nil {
				t.Fatalf("B's re-attach of x: %v, want a lease (ended by the stale s:<seq> token of its earlier incarnation?)", r.err)
			}
			must(t, r.l.Release(ctx))
		case <-time.After(10 * time.Second):
			t.Fatal("B's re-attach of x not admitted after the holder released")
		}
		eventually(t, 10*time.Second, "nothing waiting or running", func() bool {
			st := e.stats(cA, a)
			return st.QueueLength == 0 && st.ActiveCount == 0
		})
	})
}

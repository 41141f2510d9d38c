package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// TestQueueTimeoutOnRedisClock: the timeout is measured on the Redis clock.
// On miniredis the clock is frozen, so the waiter keeps waiting however long
// the test sleeps, until the Redis clock is moved past the timeout.
func TestQueueTimeoutOnRedisClock(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		o := e.opts()
		o.QueueTimeout = 200 * time.Millisecond
		c := e.coordinator(o)
		const a = "to.a"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holdN(t, c, a, 1)
		res := make(chan error, 1)
		start := time.Now()
		go func() { _, err := c.EnqueueAndWait(ctx, a, "late"); res <- err }()
		if e.mr != nil {
			select {
			case err := <-res:
				t.Fatalf("timed out on the local clock while the Redis clock stood still: %v", err)
			case <-time.After(700 * time.Millisecond):
			}
			e.advance(time.Second)
		}
		select {
		case err := <-res:
			if !errors.Is(err, coordinator.ErrQueueTimeout) {
				t.Fatalf("got %v, want ErrQueueTimeout", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no timeout")
		}
		if e.mr == nil && time.Since(start) < 200*time.Millisecond {
			t.Fatal("timed out early")
		}
		st := e.stats(c, a)
		if st.QueueLength != 0 || st.TotalTimedOut != 1 {
			t.Fatalf("timed-out waiter not removed or not counted: %+v", st)
		}
	})
}

func TestContextCancelRemovesWaiter(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "cx.a"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, c, a, 1)[0]
		wctx, cancel := context.WithCancel(ctx)
		res := make(chan error, 1)
		go func() { _, err := c.EnqueueAndWait(wctx, a, "leaver"); res <- err }()
		next := waiters(t, c, a, "next", 1)
		eventually(t, 5*time.Second, "2 queued", func() bool { return e.stats(c, a).QueueLength == 2 })
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		st := e.stats(c, a)
		if st.QueueLength != 1 || st.TotalCanceled != 1 {
			t.Fatalf("canceled waiter still queued or not counted: %+v", st)
		}
		must(t, holder.Release(ctx))
		select {
		case l := <-next:
			must(t, l.Release(ctx))
		case <-time.After(5 * time.Second):
			t.Fatal("the waiter behind the canceled one was not admitted")
		}
	})
}

// TestTimeoutVersusGrantRace runs the race between a waiter giving up
// (context cancel or queue timeout) and the release that grants it, hundreds
// of times. Afterwards no slot is held, nobody waits, and every request is
// accounted for. AckTimeout is long, so a leaked grant could not be hidden by
// reclamation within the check.
func TestTimeoutVersusGrantRace(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		o := e.opts()
		o.AckTimeout = 20 * time.Second
		o.LeaseTTL = time.Minute
		o.QueueTimeout = 4 * time.Millisecond
		c := e.coordinator(o)
		const a = "race.a"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		iterations := 300
		granted, gaveUp := 0, 0
		for i := 0; i < iterations; i++ {
			before := e.stats(c, a)
			holder, err := c.EnqueueAndWait(ctx, a, fmt.Sprintf("h-%d", i))
			if err != nil {
				t.Logf("stats before it: %+v", before)
				prev, _ := c.ExecutionState(ctx, a, fmt.Sprintf("w-%d", i-1))
				t.Fatalf("iteration %d: holder: %v; stats %+v; previous waiter %+v", i, err, e.stats(c, a), prev)
			}
			wctx, cancel := context.WithCancel(ctx)
			res := make(chan *coordinator.Lease, 1)
			errs := make(chan error, 1)
			go func() {
				l, err := c.EnqueueAndWait(wctx, a, fmt.Sprintf("w-%d", i))
				res <- l
				errs <- err
			}()
			eventually(t, 5*time.Second, "queued or ended", func() bool {
				st, _ := c.ExecutionState(ctx, a, fmt.Sprintf("w-%d", i))
				return st.Status != coordinator.StatusUnknown || len(res) > 0
			})
			delay := time.Duration(rand.IntN(4000)) * time.Microsecond
			go func() {
				time.Sleep(delay)
				if i%2 == 0 {
					cancel()
				} else if e.mr != nil {
					e.advance(5 * time.Millisecond)
				}
			}()
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			must(t, holder.Release(ctx))
			l, err := <-res, <-errs
			cancel()
			if l != nil {
				granted++
				must(t, l.Release(ctx))
			} else {
				gaveUp++
				if !errors.Is(err, context.Canceled) && !errors.Is(err, coordinator.ErrQueueTimeout) {
					t.Fatalf("iteration %d: %v", i, err)
				}
			}
		}
		eventually(t, 2*time.Second, "no slot held and nobody waiting", func() bool {
			st := e.stats(c, a)
			return st.ActiveCount == 0 && st.QueueLength == 0
		})
		st := e.stats(c, a)
		if st.TotalEnqueued != st.TotalAdmitted+st.TotalTimedOut+st.TotalCanceled+st.TotalAbandoned ||
			st.TotalAdmitted != st.TotalCompleted || st.TotalReclaimed != 0 {
			t.Fatalf("totals do not add up: %+v", st)
		}
		t.Logf("%d granted, %d gave up", granted, gaveUp)
	})
}

// TestOperatorCancelOfAYoungWaiter: another process cancels a waiter that is
// far from the head of its own process's waiters (its wait loop blocks on the
// oldest ones only); the wait still ends at once with ErrCanceled.
func TestOperatorCancelOfAYoungWaiter(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		operator := e.coordinator(e.opts())
		const a, n = "ocancel.a", 20
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holdN(t, c, a, 1)
		errs := make([]chan error, n)
		for i := range n {
			errs[i] = make(chan error, 1)
			go func() {
				_, err := c.EnqueueAndWait(ctx, a, fmt.Sprintf("w-%d", i))
				errs[i] <- err
			}()
			eventually(t, 5*time.Second, "queued in order", func() bool { return e.stats(c, a).QueueLength == int64(i+1) })
		}
		removed, err := operator.CancelExecution(ctx, a, fmt.Sprintf("w-%d", n-1))
		must(t, err)
		if !removed {
			t.Fatal("the youngest waiter was not waiting")
		}
		start := time.Now()
		select {
		case err := <-errs[n-1]:
			if !errors.Is(err, coordinator.ErrCanceled) {
				t.Fatalf("canceled waiter ended with %v, want ErrCanceled", err)
			}
			t.Logf("canceled waiter ended %s after the cancel", time.Since(start).Round(time.Millisecond))
		case <-time.After(slowFloor):
			t.Fatal("the canceled waiter did not end")
		}
		for i := 0; i < n-1; i++ {
			select {
			case err := <-errs[i]:
				t.Fatalf("w-%d ended with %v, but only w-%d was canceled", i, err, n-1)
			default:
			}
		}
	})
}

package coordinator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// twiceHook runs every script call twice, as a go-redis retry after a lost
// reply would; the caller sees the second reply.
type twiceHook struct{}

func (twiceHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (twiceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		name := strings.ToLower(cmd.Name())
		if name == "evalsha" || name == "eval" || name == "fcall" {
			if err := next(ctx, cmd); err != nil {
				return err
			}
		}
		return next(ctx, cmd)
	}
}
func (twiceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := next(ctx, cmds); err != nil { // a retried pipeline: every script runs twice
			return err
		}
		return next(ctx, cmds)
	}
}

// TestScriptsRunTwice: with every script executed twice, the limit, FIFO
// order and the counters stay exact.
func TestScriptsRunTwice(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		rdb := e.client()
		rdb.AddHook(twiceHook{})
		o := e.opts()
		o.Prefix = e.prefix
		c, err := coordinator.New(rdb, o)
		must(t, err)
		defer c.Close()
		const a = "twice.a"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		l1, err := c.EnqueueAndWait(ctx, a, "e1")
		must(t, err)
		got := waiters(t, c, a, "w", 1)
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(c, a).QueueLength == 1 })
		// The retried release reports "not held", but frees exactly one slot.
		if err := l1.Release(ctx); err != nil && !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatal(err)
		}
		l2 := <-got
		if st := e.stats(c, a); st.ActiveCount != 1 || st.QueueLength != 0 {
			t.Fatalf("after doubled release: %+v", st)
		}
		held, err := c.NotifyCompletion(ctx, a, l2.ExecutionID())
		must(t, err)
		_ = held
		removed, err := c.CancelExecution(ctx, a, "nobody")
		must(t, err)
		if removed {
			t.Fatal("cancel of an unknown execution removed something")
		}
		st := e.stats(c, a)
		if st.ActiveCount != 0 || st.TotalEnqueued != 2 || st.TotalAdmitted != 2 || st.TotalCompleted != 2 {
			t.Fatalf("counters after doubled scripts: %+v", st)
		}
	})
}

func TestIdempotentCalls(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c1 := e.coordinator(e.opts())
		c2 := e.coordinator(e.opts())
		const a = "idem.a"
		must(t, c1.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder, err := c1.EnqueueAndWait(ctx, a, "run-1")
		must(t, err)

		// Already running: the same lease comes back, nothing is counted twice.
		again, err := c1.EnqueueAndWait(ctx, a, "run-1")
		must(t, err)
		if again != holder {
			t.Fatal("re-enqueue of a running execution in the same process returned another lease")
		}

		// Already waiting: a second caller attaches and keeps the place.
		first := waiters(t, c1, a, "wait", 1) // wait-0
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(c1, a).QueueLength == 1 })
		later := waiters(t, c1, a, "later", 1)
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(c1, a).QueueLength == 2 })
		sameProc := waiters(t, c1, a, "wait", 1) // wait-0 again, same process
		time.Sleep(50 * time.Millisecond)
		if st := e.stats(c1, a); st.QueueLength != 2 || st.TotalEnqueued != 3 {
			t.Fatalf("re-attach changed the queue: %+v", st)
		}
		must(t, holder.Release(ctx))
		l1, l2 := redistest.Recv(t, first, "wait-0's first caller"), redistest.Recv(t, sameProc, "wait-0's second caller")
		if l1 != l2 {
			t.Fatal("two callers of one waiting execution got different leases")
		}
		must(t, l1.Release(ctx))
		lt := redistest.Recv(t, later, "later")

		// A redelivered request re-attaches from another process, keeping its
		// place; the original caller is told it was superseded.
		orig := make(chan error, 1)
		go func() { _, err := c1.EnqueueAndWait(ctx, a, "redeliver"); orig <- err }()
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(c1, a).QueueLength == 1 })
		moved := waiters(t, c2, a, "redeliver", 0)
		go func() {
			l, err := c2.EnqueueAndWait(ctx, a, "redeliver")
			if err == nil {
				moved <- l
			}
		}()
		if err := redistest.Recv(t, orig, "the original caller"); !errors.Is(err, coordinator.ErrCanceled) {
			t.Fatalf("original caller: %v, want ErrCanceled (superseded)", err)
		}
		if st := e.stats(c1, a); st.QueueLength != 1 {
			t.Fatalf("re-attach from another process lost the place: %+v", st)
		}
		must(t, lt.Release(ctx))
		l := redistest.Recv(t, moved, "the re-attached caller")
		if l.ExecutionID() != "redeliver" {
			t.Fatal(l.ExecutionID())
		}

		// Completion of unknown or completed IDs changes nothing.
		must(t, l.Release(ctx))
		for _, id := range []string{"redeliver", "never-seen", "run-1"} {
			held, err := c2.NotifyCompletion(ctx, a, id)
			must(t, err)
			if held {
				t.Fatalf("NotifyCompletion(%s) freed a slot", id)
			}
		}
		// A second cancel changes nothing.
		_, err = c2.EnqueueAndWait(ctx, a, "blocker")
		must(t, err)
		victim := make(chan error, 1)
		go func() { _, err := c1.EnqueueAndWait(ctx, a, "victim"); victim <- err }()
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(c1, a).QueueLength >= 1 })
		r1, err := c2.CancelExecution(ctx, a, "victim")
		must(t, err)
		r2, err := c2.CancelExecution(ctx, a, "victim")
		must(t, err)
		if !r1 || r2 {
			t.Fatalf("cancel twice: %v then %v, want true then false", r1, r2)
		}
		if err := <-victim; !errors.Is(err, coordinator.ErrCanceled) {
			t.Fatalf("canceled waiter got %v, want ErrCanceled", err)
		}
		st := e.stats(c1, a)
		if st.ActiveCount < 0 || st.TotalCanceled != 1 {
			t.Fatalf("stats: %+v", st)
		}
		if st.TotalEnqueued != st.TotalAdmitted+st.TotalTimedOut+st.TotalCanceled+st.TotalAbandoned+st.QueueLength {
			t.Fatalf("totals do not add up: %+v", st)
		}
	})
}

func TestQueueFull(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		o := e.opts()
		o.MaxQueueLength = 3
		c := e.coordinator(o)
		const a = "full.a"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holdN(t, c, a, 1)
		waiters(t, c, a, "w", 3)
		eventually(t, 5*time.Second, "3 queued", func() bool { return e.stats(c, a).QueueLength == 3 })
		before := e.stats(c, a)
		start := time.Now()
		_, err := c.EnqueueAndWait(ctx, a, "one-too-many")
		if !errors.Is(err, coordinator.ErrQueueFull) {
			t.Fatalf("got %v, want ErrQueueFull", err)
		}
		if time.Since(start) > 20*time.Second { // far below the 5-minute queue timeout
			t.Fatal("ErrQueueFull was not immediate")
		}
		st, _ := c.ExecutionState(ctx, a, "one-too-many")
		after := e.stats(c, a)
		if st.Status != coordinator.StatusUnknown || after.QueueLength != 3 || after.TotalEnqueued != before.TotalEnqueued ||
			after.TotalRejected != before.TotalRejected+1 {
			t.Fatalf("rejected request was stored: %+v / %+v", st, after)
		}
	})
}

package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

func TestFastPathAndHandoff(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		if err := c.SetConcurrencyLimit(ctx, limits.Action("core.http"), 1); err != nil {
			t.Fatal(err)
		}
		l1, err := c.EnqueueAndWait(ctx, "core.http", "e1")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *coordinator.Lease, 1)
		go func() {
			l, err := c.EnqueueAndWait(ctx, "core.http", "e2")
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		eventually(t, 5*time.Second, "e2 queued", func() bool { return e.stats(c, "core.http").QueueLength == 1 })
		select {
		case <-got:
			t.Fatal("e2 admitted over the limit")
		case <-time.After(50 * time.Millisecond):
		}
		if err := l1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		var l2 *coordinator.Lease
		select {
		case l2 = <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("e2 not admitted after release")
		}
		if l2.Token() <= l1.Token() {
			t.Fatalf("fencing tokens not increasing: %d then %d", l1.Token(), l2.Token())
		}
		if err := l2.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l2.Release(ctx); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("second release: %v, want ErrLeaseLost", err)
		}
		st := e.stats(c, "core.http")
		if st.ActiveCount != 0 || st.QueueLength != 0 || st.TotalEnqueued != 2 || st.TotalAdmitted != 2 || st.TotalCompleted != 2 {
			t.Fatalf("stats after: %+v", st)
		}
		_ = context.Background
	})
}

func TestCloseEndsWaiters(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		other := e.coordinator(e.opts())
		c, err := coordinator.New(e.client(), e.opts())
		must(t, err)
		const a = "close.a"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		held := holdN(t, c, a, 1)[0]
		errs := make(chan error, 3)
		for i := 0; i < 3; i++ {
			go func() { _, err := c.EnqueueAndWait(ctx, a, fmt.Sprintf("w%d", i)); errs <- err }()
		}
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(other, a).QueueLength == 3 })
		must(t, c.Close())
		must(t, c.Close()) // twice is fine
		for i := 0; i < 3; i++ {
			if err := <-errs; !errors.Is(err, coordinator.ErrClosed) {
				t.Fatalf("waiter ended with %v, want ErrClosed", err)
			}
		}
		select {
		case <-held.Lost():
		default:
			t.Fatal("a held lease's Lost() stays open after Close")
		}
		if st := e.stats(other, a); st.QueueLength != 0 || st.TotalCanceled != 3 {
			t.Fatalf("closed waiters left in the queue: %+v", st)
		}
		if _, err := c.EnqueueAndWait(ctx, a, "after"); !errors.Is(err, coordinator.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	})
}

// TestReadOnlyCoordinatorWritesNothing: a read-only Coordinator reads
// statistics, states and policies, writes nothing (no owner ID, no
// background work), and refuses every write with ErrReadOnly.
func TestReadOnlyCoordinatorWritesNothing(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		w := e.coordinator(e.opts())
		must(t, w.SetConcurrencyLimit(ctx, limits.Action("ro.a"), 1))
		holdN(t, w, "ro.a", 1)
		// The writer records the action in the actions index in the
		// background: wait for it, or it could land after the snapshot.
		eventually(t, 10*time.Second, "ro.a in the actions index", func() bool {
			ok, err := e.rdb.SIsMember(ctx, e.prefix+":actions", "ro.a").Result()
			return err == nil && ok
		})
		before := e.keys()
		slices.Sort(before)
		o := e.opts()
		o.ReadOnly = true
		o.SweepInterval = 10 * time.Millisecond // would sweep, were it not read-only
		r := e.coordinator(o)
		if st := e.stats(r, "ro.a"); st.ActiveCount != 1 || st.MaxConcurrent != 1 {
			t.Fatalf("read-only stats: %+v", st)
		}
		if _, err := r.Policies(ctx); err != nil {
			t.Fatal(err)
		}
		for name, err := range map[string]error{
			"EnqueueAndWait":      func() error { _, err := r.EnqueueAndWait(ctx, "ro.a", "x"); return err }(),
			"NotifyCompletion":    func() error { _, err := r.NotifyCompletion(ctx, "ro.a", "x"); return err }(),
			"CancelExecution":     func() error { _, err := r.CancelExecution(ctx, "ro.a", "x"); return err }(),
			"SetConcurrencyLimit": r.SetConcurrencyLimit(ctx, limits.Global(), 3),
			"Sweep":               func() error { _, err := r.Sweep(ctx); return err }(),
		} {
			if !errors.Is(err, coordinator.ErrReadOnly) {
				t.Errorf("%s on a read-only Coordinator: %v, want ErrReadOnly", name, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		must(t, r.Close())
		after := e.keys()
		slices.Sort(after)
		if !slices.Equal(after, before) {
			t.Fatalf("a read-only Coordinator wrote: keys %v, before %v", after, before)
		}
	})
}

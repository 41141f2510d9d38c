package coordinator_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// holdN admits n executions of action and returns their leases.
func holdN(t *testing.T, c *coordinator.Coordinator, action string, n int) []*coordinator.Lease {
	t.Helper()
	var out []*coordinator.Lease
	for i := 0; i < n; i++ {
		l, err := c.EnqueueAndWait(ctxT(t), action, fmt.Sprintf("hold-%s-%d-%d", action, i, time.Now().UnixNano()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// waiters starts n EnqueueAndWait calls and returns a channel of their leases.
func waiters(t *testing.T, c *coordinator.Coordinator, action, prefix string, n int) chan *coordinator.Lease {
	out := make(chan *coordinator.Lease, n)
	for i := 0; i < n; i++ {
		go func() {
			l, err := c.EnqueueAndWait(ctxT(t), action, fmt.Sprintf("%s-%d", prefix, i))
			if err == nil {
				out <- l
			}
		}()
	}
	return out
}

func TestLimitPrecedence(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		check := func(action string, want int64, src string) {
			t.Helper()
			st := e.stats(c, action)
			if st.MaxConcurrent != want || st.LimitSource != src {
				t.Fatalf("%s: limit %d from %q, want %d from %q", action, st.MaxConcurrent, st.LimitSource, want, src)
			}
		}
		check("core.http", limits.Unlimited, "default")
		must(t, c.SetConcurrencyLimit(ctx, limits.Global(), 7))
		check("core.http", 7, "global")
		must(t, c.SetConcurrencyLimit(ctx, limits.Pack("core"), 3))
		check("core.http", 3, "pack:core")
		check("other.x", 7, "global")
		must(t, c.SetConcurrencyLimit(ctx, limits.Action("core.http"), limits.Unlimited))
		check("core.http", limits.Unlimited, "action:core.http")
		check("core.ssh", 3, "pack:core")
		must(t, c.ClearConcurrencyLimit(ctx, limits.Action("core.http")))
		check("core.http", 3, "pack:core")
		must(t, c.ClearConcurrencyLimit(ctx, limits.Pack("core")))
		check("core.http", 7, "global")
		must(t, c.ClearConcurrencyLimit(ctx, limits.Global()))
		check("core.http", limits.Unlimited, "default")

		// Unlimited admits everything at once.
		holdN(t, c, "core.http", 50)
		if st := e.stats(c, "core.http"); st.ActiveCount != 50 || st.QueueLength != 0 {
			t.Fatalf("unlimited: %+v", st)
		}
	})
}

func TestPauseRaiseLower(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "core.pause"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 0))
		got := waiters(t, c, a, "w", 4)
		eventually(t, 5*time.Second, "4 queued while paused", func() bool { return e.stats(c, a).QueueLength == 4 })
		if st := e.stats(c, a); st.ActiveCount != 0 {
			t.Fatalf("paused action admitted: %+v", st)
		}
		// Raising the limit admits waiters at once (no release needed).
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 2))
		var held []*coordinator.Lease
		for i := 0; i < 2; i++ {
			select {
			case l := <-got:
				held = append(held, l)
			case <-time.After(5 * time.Second):
				t.Fatal("raising the limit did not admit waiters")
			}
		}
		// Lowering it lets running ones finish and admits nobody until under it.
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		must(t, held[0].Release(ctx))
		select {
		case <-got:
			t.Fatal("admitted while at the new lower limit")
		case <-time.After(100 * time.Millisecond):
		}
		must(t, held[1].Release(ctx))
		select {
		case l := <-got:
			must(t, l.Release(ctx))
		case <-time.After(5 * time.Second):
			t.Fatal("not admitted once under the lowered limit")
		}
		select {
		case l := <-got:
			must(t, l.Release(ctx))
		case <-time.After(5 * time.Second):
			t.Fatal("last waiter not admitted")
		}
	})
}

// TestPolicySeenByOtherProcesses: a pack limit set by one Coordinator
// applies to an action first used by another, within 1 s.
func TestPolicySeenByOtherProcesses(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c1 := e.coordinator(e.opts())
		c2 := e.coordinator(e.opts())
		c2.QueueStats(ctx, "pk.a") // c2 has started; its cache is at version 0
		must(t, c1.SetConcurrencyLimit(ctx, limits.Pack("pk"), 1))
		start := time.Now()
		eventually(t, time.Second, "c2 sees the pack limit", func() bool {
			return e.stats(c2, "pk.new").MaxConcurrent == 1
		})
		t.Logf("seen after %s", time.Since(start))
		holdN(t, c2, "pk.new", 1)
		got := waiters(t, c2, "pk.new", "w", 1)
		select {
		case <-got:
			t.Fatal("second execution admitted over a pack limit of 1")
		case <-time.After(100 * time.Millisecond):
		}
	})
}

// TestConcurrentPolicyChanges: the last version wins everywhere.
func TestConcurrentPolicyChanges(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		c := e.coordinator(e.opts())
		holdN(t, c, "cp.a", 1)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.SetConcurrencyLimit(ctx, limits.Pack("cp"), i); err != nil {
					t.Error(err) // not Fatal: this is not the test's goroutine
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		p, err := c.Policies(ctx)
		must(t, err)
		want := p.Limits[limits.Pack("cp")]
		if got := e.stats(c, "cp.a").MaxConcurrent; got != int64(want) {
			t.Fatalf("action has limit %d, policies say %d (version %d)", got, want, p.Version)
		}
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFreshCoordinatorAppliesExistingLimits: a Coordinator created after a
// global limit was set must apply it to an action nobody has used yet, from
// its very first call (found by cmd/bench: it used to start with an empty
// policy cache and record the action as unlimited).
func TestFreshCoordinatorAppliesExistingLimits(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		admin := e.coordinator(e.opts())
		must(t, admin.SetConcurrencyLimit(ctx, limits.Global(), 1))
		for i := 0; i < 10; i++ {
			fresh := e.coordinator(e.opts())
			ref := fmt.Sprintf("fresh.a%d", i)
			l1, err := fresh.EnqueueAndWait(ctx, ref, "x1")
			must(t, err)
			wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			l2, err := fresh.EnqueueAndWait(wctx, ref, "x2")
			cancel()
			if err == nil {
				l2.Release(ctx)
				t.Fatalf("coordinator %d admitted 2 executions of %s under a global limit of 1", i, ref)
			}
			must(t, l1.Release(ctx))
			if st := e.stats(fresh, ref); st.MaxConcurrent != 1 || st.LimitSource != "global" {
				t.Fatalf("%s: %+v", ref, st)
			}
		}
	})
}

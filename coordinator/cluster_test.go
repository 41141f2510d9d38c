package coordinator_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
)

// TestClusterIndexesOnOtherMasters: the cross-slot keys (policies, the
// actions and sweep indexes, the owner registry) live on masters other than
// the action's, and every path through them still works: a limit change
// reaches the action and admits its waiter, the sweep index lists the
// action while it has a waiter behind a deadline, the listing shows it and
// forgetting it takes it out.
func TestClusterIndexesOnOtherMasters(t *testing.T) {
	e := newClusterEnv(t)
	ctx := ctxT(t)
	// A prefix whose cross-slot keys all avoid one master, and an action on it.
	var k keys.Keys
	var action, actionMaster string
	base := e.prefix
	for i := 0; action == ""; i++ {
		if i > 200 {
			t.Fatal("no prefix keeps the cross-slot keys off one master")
		}
		e.prefix = fmt.Sprintf("%s-x%d", base, i)
		k = keys.New(e.prefix)
		used := map[string]bool{}
		for _, key := range []string{k.Policies(), k.Actions(), k.Sweep(), k.Completed()} {
			m, err := e.cluster.MasterOf(ctx, key)
			must(t, err)
			used[m] = true
		}
		if len(used) == 3 {
			continue
		}
		for j := 0; j < 50 && action == ""; j++ {
			a := fmt.Sprintf("xs.a%d", j)
			m, err := e.cluster.MasterOf(ctx, k.Action(a).Queue())
			must(t, err)
			if !used[m] {
				action, actionMaster = a, m
			}
		}
	}
	t.Logf("prefix %s: action %s on %s, the cross-slot keys elsewhere", e.prefix, action, actionMaster)

	c := e.coordinator(e.opts())
	must(t, c.SetConcurrencyLimit(ctx, limits.Pack("xs"), 1))
	held, err := c.EnqueueAndWait(ctx, action, "x1")
	must(t, err)
	got := make(chan error, 1)
	var second *coordinator.Lease
	go func() {
		l, err := c.EnqueueAndWait(ctx, action, "x2")
		second = l
		got <- err
	}()
	eventually(t, 10*time.Second, "x2 queued", func() bool { return e.stats(c, action).QueueLength == 1 })
	eventually(t, 10*time.Second, "the action in the sweep index", func() bool {
		_, err := e.rdb.ZScore(ctx, k.Sweep(), action).Result()
		return err == nil
	})
	refs, _, err := c.Actions(ctx, 0, 100)
	must(t, err)
	if !slices.Contains(refs, action) {
		t.Fatalf("listing %v lacks %s", refs, action)
	}
	// Raising the pack's limit is written on another master and pushed to the action.
	must(t, c.SetConcurrencyLimit(ctx, limits.Pack("xs"), 2))
	select {
	case err := <-got:
		must(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the raised limit did not admit the waiter")
	}
	if st := e.stats(c, action); st.ActiveCount != 2 || st.MaxConcurrent != 2 || st.LimitSource != "pack:xs" {
		t.Fatalf("after the raise: %+v", st)
	}
	must(t, held.Release(ctx))
	must(t, second.Release(ctx))
	if _, err := c.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	must(t, c.ForgetAction(context.WithoutCancel(ctx), action))
	refs, _, err = c.Actions(ctx, 0, 100)
	must(t, err)
	if slices.Contains(refs, action) {
		t.Fatalf("listing %v still has the forgotten %s", refs, action)
	}
}

// TestClusterFunctionLibraryLost: a master that lost the function library
// (FUNCTION FLUSH, as an empty node promoted or restarted would be) gets it
// back on the next call, which then succeeds: the caller sees no error,
// with and without WaitReplicas.
func TestClusterFunctionLibraryLost(t *testing.T) {
	for _, wr := range []int{0, 1} {
		t.Run(fmt.Sprintf("WaitReplicas=%d", wr), func(t *testing.T) {
			e := newClusterEnv(t)
			e.waitReplicas = wr
			ctx := ctxT(t)
			const a = "fl.a"
			c := e.coordinator(e.opts())
			l, err := c.EnqueueAndWait(ctx, a, "f1")
			must(t, err)
			must(t, l.Release(ctx))
			addr, err := e.cluster.MasterOf(ctx, keys.New(e.prefix).Action(a).Queue())
			must(t, err)
			node := redis.NewClient(&redis.Options{Addr: addr})
			defer node.Close()
			must(t, node.FunctionFlush(ctx).Err())
			for i := 2; i <= 3; i++ {
				l, err := c.EnqueueAndWait(ctx, a, fmt.Sprintf("f%d", i))
				if err != nil {
					t.Fatalf("admission after FUNCTION FLUSH on %s: %v", addr, err)
				}
				must(t, l.Release(ctx))
			}
			libs, err := node.FunctionList(ctx, redis.FunctionListQuery{}).Result()
			must(t, err)
			if len(libs) == 0 {
				t.Fatalf("%s has no function library after the calls", addr)
			}
		})
	}
}

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
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// failScript fails every call of one script while on: a fault injector in
// the style of a network partition between one process and Redis.
type failScript struct {
	sha, fn string // the script's EVALSHA hash and Function name
	on      atomic.Bool
}

func (f *failScript) matches(cmd redis.Cmder) bool {
	args := cmd.Args()
	if !f.on.Load() || len(args) < 2 {
		return false
	}
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		return args[1] == f.sha
	case "fcall":
		return args[1] == f.fn
	}
	return false
}

var errInjected = errors.New("injected fault")

func (f *failScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.matches(cmd) {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}
func (f *failScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds { // the whole pipeline is lost, as over a partition
			if f.matches(cmd) {
				for _, c := range cmds {
					c.SetErr(errInjected)
				}
				return errInjected
			}
		}
		return next(ctx, cmds)
	}
}

// TestLeaseLost: a holder whose heartbeats stop reaching Redis loses its
// slot after LeaseTTL; Lost() closes, the next waiter is admitted, and the
// late Release frees nothing.
func TestLeaseLost(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		o := e.opts()
		o.LeaseTTL = 600 * time.Millisecond
		o.AckTimeout = 200 * time.Millisecond
		o.SweepInterval = 50 * time.Millisecond
		rdb := e.client()
		fault := &failScript{sha: scripts.ByName("renew").Hash(), fn: scripts.ByName("renew").Function()}
		rdb.AddHook(fault)
		cA, err := coordinator.New(rdb, coordinator.Options{Prefix: e.prefix, LeaseTTL: o.LeaseTTL, AckTimeout: o.AckTimeout, SweepInterval: -1})
		must(t, err)
		defer cA.Close()
		ob := o
		ob.LeaseTTL = time.Minute // the next waiter's process lives: only cA's lease must run out
		cB := e.coordinator(ob)
		const a = "lost.a"
		must(t, cA.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		lease, err := cA.EnqueueAndWait(ctx, a, "partitioned")
		must(t, err)
		got := waiters(t, cB, a, "next", 1)
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(cB, a).QueueLength == 1 })
		fault.on.Store(true)
		if e.mr != nil {
			// Past the lease on the Redis clock, in steps shorter than a
			// heartbeat interval so that live processes keep up.
			for i := 0; i < 8; i++ {
				time.Sleep(250 * time.Millisecond)
				e.advance(150 * time.Millisecond)
			}
		}
		select {
		case <-lease.Lost():
		case <-time.After(5 * time.Second):
			t.Fatal("Lost() not closed after the lease could not be renewed")
		}
		var next *coordinator.Lease
		select {
		case next = <-got:
		case <-time.After(5 * time.Second):
			z, _ := e.rdb.ZRangeWithScores(ctx, e.prefix+":sweep", 0, -1).Result()
			tm, _ := e.rdb.Time(ctx).Result()
			t.Fatalf("next waiter not admitted after the lease expired: %+v index %v now %v", e.stats(cB, a), z, tm.UnixMilli())
		}
		fault.on.Store(false)
		if err := lease.Release(ctx); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("late release: %v, want ErrLeaseLost", err)
		}
		st := e.stats(cB, a)
		if st.ActiveCount != 1 || st.TotalReclaimed != 1 {
			t.Fatalf("late release freed the new holder's slot, or no reclaim counted: %+v", st)
		}
		if next.Token() <= lease.Token() {
			t.Fatal("fencing token did not increase")
		}
		must(t, next.Release(ctx))
	})
}

// TestRedisRestart: a Redis that restarts empty (crash without persistence,
// or failover to a replica that missed the writes) loses queue entries and
// scripts. Waiters end with ErrLeaseLost instead of waiting forever, holders
// see Lost(), and the Coordinator keeps working (scripts are reloaded).
// A server of its own, restarted in place; on a cluster the same loss is a
// master failed over to a replica that missed writes (failover_test.go).
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	c, err := coordinator.New(rdb, coordinator.Options{LeaseTTL: 600 * time.Millisecond, AckTimeout: 200 * time.Millisecond})
	must(t, err)
	defer c.Close()
	ctx := ctxT(t)
	const a = "restart.a"
	must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
	holder, err := c.EnqueueAndWait(ctx, a, "holder")
	must(t, err)
	res := make(chan error, 1)
	go func() { _, err := c.EnqueueAndWait(ctx, a, "waiter"); res <- err }()
	eventually(t, 5*time.Second, "queued", func() bool { st, _ := c.QueueStats(ctx, a); return st.QueueLength == 1 })
	must(t, srv.Restart())
	select {
	case err := <-res:
		if !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("waiter after restart: %v, want ErrLeaseLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter still waiting for a grant Redis forgot")
	}
	select {
	case <-holder.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("holder's Lost() not closed after Redis forgot the lease")
	}
	l, err := c.EnqueueAndWait(ctx, a, "after")
	must(t, err)
	must(t, l.Release(ctx))
}

// TestScriptFlush: NOSCRIPT after a flush (as after a failover) is handled.
func TestScriptFlush(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		l, err := c.EnqueueAndWait(ctx, "flush.a", "e1")
		must(t, err)
		must(t, e.rdb.ScriptFlush(ctx).Err())
		must(t, l.Release(ctx))
		l, err = c.EnqueueAndWait(ctx, "flush.a", "e2")
		must(t, err)
		must(t, l.Release(ctx))
	})
}

package coordinator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// TestRateQuotaOnCluster: on a Redis Cluster every rate and quota script
// touches only its action's slot (the quota key is declared beside the
// others), a throttled head is admitted by its tick, and a quota refuses.
func TestRateQuotaOnCluster(t *testing.T) {
	cl := redistest.SharedCluster(t)
	ctx := ctxT(t)
	prefix := redistest.Prefix(t)
	newC := func() *coordinator.Coordinator {
		rdb := cl.Client()
		t.Cleanup(func() { rdb.Close() })
		c, err := coordinator.New(rdb, coordinator.Options{Prefix: prefix, SweepInterval: 50 * time.Millisecond,
			LeaseTTL: 20 * time.Second, Logger: testLogger(t)})
		must(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	c, other := newC(), newC()
	rdb := cl.Client()
	t.Cleanup(func() { rdb.Close() })
	waitWindowRoom(t, rdb, limits.Day, time.Minute)
	for _, a := range []string{"cl.one", "cl.two"} {
		must(t, c.SetQuota(ctx, limits.Action(a), limits.Quota{Limit: 3, Window: limits.Day}))
	}
	must(t, c.SetRateLimit(ctx, limits.Pack("cl"), limits.Rate{Limit: 1, Per: 300 * time.Millisecond, Burst: 1}))
	for _, a := range []string{"cl.one", "cl.two"} {
		first := holdN(t, c, a, 1)[0]
		done := make(chan error, 1)
		go func() {
			_, err := other.EnqueueAndWait(ctx, a, "second")
			done <- err
		}()
		if err := recv(t, done, a+" second"); err != nil {
			t.Fatal(err)
		}
		st, err := c.ExecutionState(ctx, a, "second")
		must(t, err)
		if d := st.RunningSince.Sub(sinceTime(t, c, a, first.ExecutionID())); d < 299*time.Millisecond {
			t.Fatalf("%s: second admitted %v after the first, before its token", a, d)
		}
		if _, err := c.EnqueueAndWait(ctx, a, "third"); err != nil {
			t.Fatal(err)
		}
		var qe *coordinator.QuotaError
		if _, err := c.EnqueueAndWait(ctx, a, "fourth"); !errors.As(err, &qe) || qe.Quota.Limit != 3 {
			t.Fatalf("%s: fourth of a quota of 3: %v", a, err)
		}
		if st := mustStats(t, c, a); st.QuotaUsed != 3 || st.TotalThrottled < 1 || st.TotalQuotaRejected != 1 {
			t.Fatalf("%s: %+v", a, st)
		}
	}
}

func sinceTime(t *testing.T, c *coordinator.Coordinator, action, id string) time.Time {
	t.Helper()
	st, err := c.ExecutionState(context.Background(), action, id)
	must(t, err)
	return st.RunningSince
}

func mustStats(t *testing.T, c *coordinator.Coordinator, action string) coordinator.QueueStats {
	t.Helper()
	st, err := c.QueueStats(context.Background(), action)
	must(t, err)
	return st
}

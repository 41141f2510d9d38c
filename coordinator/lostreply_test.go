package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// TestLostBLPOPReply: BLPOP delivers at most once. A release that grants a
// waiter blocked in another process and a CLIENT KILL of that waiter's
// blocked connection arrive in one pipeline, so Redis pops the grant token
// into the doomed connection's output buffer and frees the connection before
// the reply is written. The waiter must still be admitted (its wait loop
// sees the error and reconciles with Redis), not failed, and releasing its
// lease must free the slot. Real redis-server only: miniredis cannot kill
// clients, and on a cluster the release and the CLIENT KILL would have to
// reach the node holding the action's slot in one pipeline, which a cluster
// client does not promise for a keyless command.
func TestLostBLPOPReply(t *testing.T) {
	e := newRealEnv(t)
	const rounds = 20
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ctl := e.nodeClient() // the connection that sends the release and the kill together
	release := scripts.ByName("release")
	must(t, release.Load(ctx, ctl))
	k := keys.New(e.prefix)

	hits, reconciles := 0, int64(0)
	for i := 0; i < rounds; i++ {
		a := fmt.Sprintf("lostreply.%d", i)
		log := newTestLog(t, "reconciling")
		o := e.opts()
		o.LeaseTTL = 3 * time.Second
		o.AckTimeout = time.Second
		o.BlockTimeout = 5 * time.Second // the waiter stays blocked while the test aims
		o.Logger = log.logger()
		cA := e.coordinator(o)
		cB := e.coordinator(o)
		must(t, cA.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder, err := cA.EnqueueAndWait(ctx, a, "holder")
		must(t, err)

		type result struct {
			l   *coordinator.Lease
			err error
		}
		got := make(chan result, 1)
		go func() {
			l, err := cB.EnqueueAndWait(ctx, a, "waiter")
			got <- result{l, err}
		}()
		var blocked []string
		eventually(t, 10*time.Second, "the waiter queued and its loop blocked in BLPOP", func() bool {
			st, err := cB.QueueStats(ctx, a)
			if err != nil || st.QueueLength != 1 {
				return false
			}
			blocked, err = blockedBLPOPs(ctx, ctl)
			return err == nil && len(blocked) == 1
		})

		// One pipeline: the release grants the waiter (Redis serves the
		// blocked BLPOP right after the script), the kill frees that
		// connection before its reply is written, and LLEN shows whether
		// the token was popped.
		ak := k.Action(a)
		grantKey := ak.Grant(cB.Owner(), "waiter")
		var rel *redis.Cmd
		var kill *redis.Cmd
		var left *redis.IntCmd
		_, _ = ctl.Pipelined(ctx, func(p redis.Pipeliner) error {
			rel = release.EvalSha(ctx, p, ak.List, ak.Base, "holder", holder.Token(), o.AckTimeout.Milliseconds(), -1, 0, "", "", "")
			kill = p.Do(ctx, "CLIENT", "KILL", "ID", blocked[0])
			left = p.LLen(ctx, grantKey)
			return nil
		})
		fired := time.Now()
		relReply, err := rel.Slice()
		if err != nil || len(relReply) != 4 || relReply[0] != int64(1) || relReply[1] != int64(1) {
			t.Fatalf("round %d: release in the pipeline: %v %v, want held 1 and granted 1", i, relReply, err)
		}
		hit := kill.Err() == nil && left.Err() == nil && left.Val() == 0
		if hit {
			hits++
		}

		select {
		case r := <-got:
			if r.err != nil {
				t.Fatalf("round %d (kill hit the blocked connection: %v; kill %v, grant key length %d): waiter failed: %v",
					i, hit, kill.Err(), left.Val(), r.err)
			}
			if r.l.Token() <= holder.Token() {
				t.Fatalf("round %d: waiter admitted with token %d, holder had %d", i, r.l.Token(), holder.Token())
			}
			t.Logf("round %d: kill hit the blocked BLPOP: %v; waiter admitted %s after the release (token %d)",
				i, hit, time.Since(fired).Round(time.Millisecond), r.l.Token())
			must(t, r.l.Release(ctx))
		case <-time.After(15 * time.Second):
			st, _ := cA.ExecutionState(ctx, a, "waiter")
			t.Fatalf("round %d (kill hit: %v): waiter not admitted 15s after the release; its state in Redis: %+v", i, hit, st)
		}
		st := e.stats(cA, a)
		if st.ActiveCount != 0 || st.QueueLength != 0 {
			t.Fatalf("round %d: after the release: %+v, want nothing running or waiting", i, st)
		}
		// The slot is free: the next request takes the fast path.
		l, err := cA.EnqueueAndWait(ctx, a, "after")
		must(t, err)
		must(t, l.Release(ctx))
		if err := holder.Release(ctx); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("round %d: the holder's own release after the test released it: %v, want ErrLeaseLost", i, err)
		}
		cA.Close()
		cB.Close()
		reconciles += log.hits.Load()
	}
	t.Logf("the kill hit the blocked BLPOP after the token was popped in %d of %d rounds; %d reconciles logged", hits, rounds, reconciles)
	if hits < 3 {
		t.Fatalf("the kill hit the blocked connection after the pop in only %d of %d rounds: the test does not exercise lost replies", hits, rounds)
	}
}

package coordinator_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// The wait loop blocks (BLPOP) on the grant keys of the waiters it knew
// when the round began. These tests change the waiters during a round in
// the two ways that left the round waiting on the wrong keys, so that the
// oldest waiter's grant sat unread until the next heartbeat or BlockTimeout
// (past AckTimeout it went back to the head of the queue and was granted
// again later, after newer waiters: a FIFO inversion in the bench's crash
// mode). Each holds the loop's BLPOP back with blpopGate until the change
// is made, so the round's keys are known; the heartbeat and BlockTimeout
// are a minute away, so only the loop's own BLPOP can deliver the grant in
// time.

// blpopGate holds back the BLPOPs of the client it hooks while closed, and
// sends the keys of each one it holds on held.
type blpopGate struct {
	mu   sync.Mutex
	gate chan struct{} // nil once opened
	held chan []string
}

func newBLPOPGate() *blpopGate {
	return &blpopGate{gate: make(chan struct{}), held: make(chan []string, 16)}
}

func (g *blpopGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

func (g *blpopGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *blpopGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *blpopGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "blpop" {
			g.mu.Lock()
			gate := g.gate
			g.mu.Unlock()
			if gate != nil {
				args := cmd.Args()
				keys := make([]string, 0, len(args))
				for _, a := range args[1 : len(args)-1] { // BLPOP key... timeout
					keys = append(keys, a.(string))
				}
				select {
				case g.held <- keys:
				default:
				}
				<-gate
			}
		}
		return next(ctx, cmd)
	}
}

// heldRound waits for the next BLPOP the gate holds and returns its keys.
func (g *blpopGate) heldRound(t *testing.T) []string {
	t.Helper()
	select {
	case keys := <-g.held:
		return keys
	case <-time.After(30 * time.Second):
		t.Fatal("the wait loop sent no BLPOP in 30s")
		return nil
	}
}

// gatedCoordinator is a Coordinator whose wait loop's BLPOPs pass gate, with
// its heartbeat and BLPOP timeout a minute away (and acknowledgements longer).
func gatedCoordinator(t *testing.T, e *env, gate *blpopGate) *coordinator.Coordinator {
	t.Helper()
	wait := e.waitClient()
	wait.AddHook(gate)
	o := e.opts()
	o.LeaseTTL, o.AckTimeout, o.BlockTimeout = 180*time.Second, 90*time.Second, 60*time.Second
	o.WaitClient = wait
	c, err := coordinator.New(e.client(), o)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// leaseAsync starts EnqueueAndWait and returns its result's channels.
func leaseAsync(ctx context.Context, c *coordinator.Coordinator, action, id string) (chan *coordinator.Lease, chan error) {
	leases, errs := make(chan *coordinator.Lease, 1), make(chan error, 1)
	go func() {
		l, err := c.EnqueueAndWait(ctx, action, id)
		if err != nil {
			errs <- err
			return
		}
		leases <- l
	}()
	return leases, errs
}

// leaseWithin waits up to d for a lease from leaseAsync.
func leaseWithin(t *testing.T, leases chan *coordinator.Lease, errs chan error, d time.Duration, what string) *coordinator.Lease {
	t.Helper()
	select {
	case l := <-leases:
		return l
	case err := <-errs:
		t.Fatalf("%s: %v", what, err)
	case <-time.After(d):
		t.Fatalf("%s: no lease in %v: its grant is not read (heartbeat and BLPOP timeout are a minute away)", what, d)
	}
	return nil
}

func waitQueue(t *testing.T, admin *coordinator.Coordinator, action string, queued, active int64) {
	t.Helper()
	eventually(t, 10*time.Second, "queue state", func() bool {
		st, err := admin.QueueStats(context.Background(), action)
		return err == nil && st.QueueLength == queued && st.ActiveCount == active
	})
}

// TestWaitLoopAfterGrantGivenBack: the round waits on w1 only (w2 came
// later); w1's grant is given back by its caller leaving (cancel.lua, no
// token on w1's key) and passes to w2. The round must look again and read
// w2's grant.
func TestWaitLoopAfterGrantGivenBack(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "waitloop.giveback"
		admin := e.coordinator(e.opts())
		must(t, admin.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, admin, a, 1)[0]

		gate := newBLPOPGate()
		c := gatedCoordinator(t, e, gate)
		ctx1, leave1 := context.WithCancel(ctx)
		defer leave1()
		_, errs1 := leaseAsync(ctx1, c, a, "w1")
		if keys := gate.heldRound(t); len(keys) != 2 { // w1's grant key and the wake key
			t.Fatalf("first round waits on %v, want w1's grant key and the wake key", keys)
		}
		leases2, errs2 := leaseAsync(ctx, c, a, "w2")
		waitQueue(t, admin, a, 2, 1)

		must(t, holder.Release(ctx)) // w1 granted; its token waits behind the gate
		waitQueue(t, admin, a, 1, 1)
		leave1() // w1's caller leaves: the grant is given back and goes to w2
		select {
		case err := <-errs1:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("w1: %v, want context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("w1: no result in 30s after its caller left")
		}
		st, err := admin.ExecutionState(ctx, a, "w2")
		must(t, err)
		if st.Status != coordinator.StatusRunning {
			t.Fatalf("w2 is %s after w1 gave its grant back, want running (granted)", st.Status)
		}

		gate.open()
		l2 := leaseWithin(t, leases2, errs2, 20*time.Second, "w2")
		if l2.Token() != st.Token {
			t.Errorf("w2 holds token %d, want %d (its first grant)", l2.Token(), st.Token)
		}
		must(t, l2.Release(ctx))
	})
}

// TestWaitLoopAfterOlderWaiterJoins: the round waits on e2; e1, enqueued
// earlier by another process, is re-attached here and so joins with a
// lower seq. The next grant is e1's: the round must look again and read it.
func TestWaitLoopAfterOlderWaiterJoins(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "waitloop.older"
		admin := e.coordinator(e.opts())
		must(t, admin.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, admin, a, 1)[0]

		other := e.coordinator(e.opts())
		_, errsOther := leaseAsync(ctx, other, a, "e1")
		waitQueue(t, admin, a, 1, 1)

		gate := newBLPOPGate()
		c := gatedCoordinator(t, e, gate)
		leases2, errs2 := leaseAsync(ctx, c, a, "e2")
		if keys := gate.heldRound(t); len(keys) != 2 { // e2's grant key and the wake key
			t.Fatalf("first round waits on %v, want e2's grant key and the wake key", keys)
		}
		leases1, errs1 := leaseAsync(ctx, c, a, "e1") // re-attach: keeps e1's place, ahead of e2
		select {
		case err := <-errsOther:
			if !errors.Is(err, coordinator.ErrReattached) {
				t.Fatalf("the other process's e1: %v, want ErrReattached", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the other process's e1: no result in 30s after the re-attach")
		}
		st, err := admin.ExecutionState(ctx, a, "e1")
		must(t, err)
		if st.Status != coordinator.StatusWaiting || st.Position != 0 {
			t.Fatalf("e1 after the re-attach: %s at %d, want waiting at the head (0)", st.Status, st.Position)
		}

		gate.open()
		must(t, holder.Release(ctx)) // e1 granted
		l1 := leaseWithin(t, leases1, errs1, 20*time.Second, "e1")
		must(t, l1.Release(ctx))
		l2 := leaseWithin(t, leases2, errs2, 20*time.Second, "e2")
		if l1.Token() >= l2.Token() {
			t.Errorf("e1 token %d, e2 token %d: want e1 first", l1.Token(), l2.Token())
		}
		must(t, l2.Release(ctx))
	})
}

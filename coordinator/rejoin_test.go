package coordinator_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// stepEnqueues runs the enqueue.lua calls of one execution in steps the test
// controls: the first runs in Redis, then its reply waits for release1; the
// second waits for release2 before it is sent. It also reports cancel.lua
// calls of that execution (dropped).
type stepEnqueues struct {
	id                   string
	enqueue, cancel      *scripts.Script
	n                    atomic.Int32
	ran1, sent2, dropped chan struct{}
	release1, release2   chan struct{}
	droppedOnce          atomic.Bool
}

func newStepEnqueues(id string) *stepEnqueues {
	return &stepEnqueues{id: id, enqueue: scripts.ByName("enqueue"), cancel: scripts.ByName("cancel"),
		ran1: make(chan struct{}), sent2: make(chan struct{}), dropped: make(chan struct{}),
		release1: make(chan struct{}), release2: make(chan struct{})}
}

// is reports whether cmd runs script s on the execution.
func (h *stepEnqueues) is(cmd redis.Cmder, s *scripts.Script) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		if args[1] != s.Hash() {
			return false
		}
	case "fcall":
		if args[1] != s.Function() {
			return false
		}
	default:
		return false
	}
	return slices.Contains(args, any(h.id))
}

// around runs next for cmds in the test's steps.
func (h *stepEnqueues) around(cmds []redis.Cmder, next func() error) error {
	for _, cmd := range cmds {
		if h.is(cmd, h.cancel) && h.droppedOnce.CompareAndSwap(false, true) {
			defer close(h.dropped)
		}
		if !h.is(cmd, h.enqueue) {
			continue
		}
		switch h.n.Add(1) {
		case 1:
			err := next()
			close(h.ran1)
			<-h.release1
			return err
		case 2:
			close(h.sent2)
			<-h.release2
			return next()
		}
	}
	return next()
}

func (h *stepEnqueues) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *stepEnqueues) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.around([]redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}
func (h *stepEnqueues) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.around(cmds, func() error { return next(ctx, cmds) })
	}
}

// gateBLPOP holds every BLPOP until open is closed, and reports the first.
type gateBLPOP struct {
	open, tried chan struct{}
	once        atomic.Bool
}

func (g *gateBLPOP) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *gateBLPOP) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "blpop") {
			if g.once.CompareAndSwap(false, true) {
				close(g.tried)
			}
			<-g.open
		}
		return next(ctx, cmd)
	}
}
func (g *gateBLPOP) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// step waits for ch, at most a minute.
func step(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("no %s within a minute", what)
	}
}

// TestSecondCallAfterTheFirstEntryLeft: two calls of one process wait for
// the same execution. The first call's enqueue queues it; another process
// cancels that entry; only then does the second call's enqueue reach Redis,
// which queues the execution anew; and the second call's reply comes while
// the first call's waiter is still alive (its wait loop has not read the
// cancel yet). The second call shares the first's outcome (canceled), and the
// newer entry must not stay behind: nobody in the process would read its
// grant, and its live owner would keep it at the head of the queue, stalling
// the action. Found by TestRandomFaults under CPU starvation.
func TestSecondCallAfterTheFirstEntryLeft(t *testing.T) {
	singleTiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a, id = "rejoin.a", "x"
		rdb := e.client()
		steps := newStepEnqueues(id)
		rdb.AddHook(steps)
		wait := e.waitClient()
		gate := &gateBLPOP{open: make(chan struct{}), tried: make(chan struct{})}
		wait.AddHook(gate)
		defer func() {
			select {
			case <-gate.open:
			default:
				close(gate.open)
			}
		}()
		o := e.opts()
		o.LeaseTTL = 2 * time.Minute // no heartbeat looks at the waiter during the test
		o.WaitClient = wait
		cA, err := coordinator.New(rdb, o)
		must(t, err)
		defer cA.Close()
		cB := e.coordinator(e.opts())
		must(t, cB.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		readPolicies(t, cA, cB)
		holder, err := cB.EnqueueAndWait(ctx, a, "holder")
		must(t, err)

		ended := make(chan error, 2)
		call := func() {
			l, err := cA.EnqueueAndWait(ctx, a, id)
			if l != nil {
				_ = l.Release(ctx)
			}
			ended <- err
		}
		go call()
		step(t, steps.ran1, "first enqueue in Redis")
		go call()
		step(t, steps.sent2, "second enqueue on its way")
		removed, err := cB.CancelExecution(ctx, a, id)
		must(t, err)
		if !removed {
			t.Fatal("the first entry was not there to cancel")
		}
		close(steps.release1) // the first call's waiter starts; its wait loop is held
		step(t, gate.tried, "BLPOP of the first call's waiter")
		close(steps.release2) // the second enqueue queues the execution anew
		select {
		case <-steps.dropped:
		case <-time.After(5 * time.Second):
			t.Log("no cancel of the newer entry within 5 s")
		}
		close(gate.open)
		for i := 0; i < 2; i++ {
			select {
			case err := <-ended:
				if !errors.Is(err, coordinator.ErrCanceled) {
					t.Errorf("call ended with %v, want ErrCanceled (the second call joined the first)", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("a call did not end within a minute")
			}
		}
		eventually(t, 30*time.Second, "no entry of the execution left in the queue", func() bool {
			return e.stats(cB, a).QueueLength == 0
		})
		must(t, holder.Release(ctx))
		eventually(t, 30*time.Second, "the slot free", func() bool { return e.stats(cB, a).ActiveCount == 0 })
	})
}

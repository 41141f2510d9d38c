package coordinator_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// loseEnqueueReply lets the next n enqueue calls run in Redis and then
// loses their replies (io.EOF), as a connection killed after Redis read the
// call but before its reply arrived. Every command of a pipeline that held
// one loses its reply too, as the whole connection would.
type loseEnqueueReply struct {
	sha, fn string
	n       atomic.Int32 // replies still to lose
	lost    atomic.Int32 // replies lost
}

func newLoseEnqueueReply() *loseEnqueueReply {
	s := scripts.ByName("enqueue")
	return &loseEnqueueReply{sha: s.Hash(), fn: s.Function()}
}

func (h *loseEnqueueReply) isEnqueue(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		return args[1] == h.sha
	case "fcall":
		return args[1] == h.fn
	}
	return false
}

// lose reports whether the pipeline just run held an enqueue that ran (no
// error of its own, as NOSCRIPT would be) and a reply is still to be lost.
func (h *loseEnqueueReply) lose(cmds []redis.Cmder) bool {
	for _, cmd := range cmds {
		if h.isEnqueue(cmd) && cmd.Err() == nil && h.n.Load() > 0 {
			h.n.Add(-1)
			h.lost.Add(1)
			return true
		}
	}
	return false
}

func (h *loseEnqueueReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *loseEnqueueReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if h.lose([]redis.Cmder{cmd}) {
			cmd.SetErr(io.EOF)
			return io.EOF
		}
		return err
	}
}
func (h *loseEnqueueReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.lose(cmds) {
			for _, c := range cmds {
				c.SetErr(io.EOF)
			}
			return io.EOF
		}
		return err
	}
}

// TestEnqueueReplyLost: an enqueue that ran in Redis but whose reply was
// lost (a dropped connection) does not end the request with an error. The
// call is sent again and, being idempotent per execution ID, finds the
// execution where the lost call left it: admitted with the same token, or
// waiting in its place. Nothing is counted twice (enqueued, quota), and the
// FIFO order holds.
func TestEnqueueReplyLost(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		rdb := e.client()
		hook := newLoseEnqueueReply()
		rdb.AddHook(hook)
		o := e.opts()
		o.Prefix = e.prefix
		c, err := coordinator.New(rdb, o)
		must(t, err)
		defer c.Close()
		other := e.coordinator(e.opts()) // a process whose replies arrive
		const a = "lostenq.a"
		must(t, other.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		e.quotaWindowRoom(t, limits.Day, time.Minute) // QuotaUsed is checked below
		must(t, other.SetQuota(ctx, limits.Action(a), limits.Quota{Limit: 100, Window: limits.Day}))
		readPolicies(t, c)

		// A free slot: the lost call admitted it.
		hook.n.Store(1)
		l1, err := c.EnqueueAndWait(ctx, a, "first")
		if err != nil {
			t.Fatalf("enqueue with its reply lost: %v, want a lease", err)
		}
		if hook.lost.Load() != 1 {
			t.Fatalf("%d replies lost, want 1: the test did not inject its fault", hook.lost.Load())
		}
		st := e.stats(other, a)
		if st.ActiveCount != 1 || st.TotalEnqueued != 1 || st.TotalAdmitted != 1 || st.QuotaUsed != 1 {
			t.Fatalf("after a lost admission reply: %+v, want 1 active, 1 enqueued, 1 admitted, quota 1", st)
		}

		// A full action: the lost call queued it; a later request of the
		// other process queues behind it and must stay behind it.
		hook.n.Store(1)
		second := make(chan *coordinator.Lease, 1)
		secondErr := make(chan error, 1)
		go func() {
			l, err := c.EnqueueAndWait(ctx, a, "second")
			if err != nil {
				secondErr <- err
				return
			}
			second <- l
		}()
		eventually(t, 10*time.Second, "second queued and its reply lost", func() bool {
			return hook.lost.Load() == 2 && e.stats(other, a).QueueLength == 1
		})
		third := waiters(t, other, a, "third", 1)
		eventually(t, 10*time.Second, "third queued", func() bool { return e.stats(other, a).QueueLength == 2 })
		must(t, l1.Release(ctx))
		var l2 *coordinator.Lease
		select {
		case l2 = <-second:
		case err := <-secondErr:
			t.Fatalf("second, its enqueue reply lost: %v, want a lease", err)
		case l := <-third:
			t.Fatalf("third (token %d) admitted before second, which came first", l.Token())
		case <-time.After(20 * time.Second):
			t.Fatalf("second not admitted after the release: %+v", e.stats(other, a))
		}
		must(t, l2.Release(ctx))
		select {
		case l3 := <-third:
			if l3.Token() <= l2.Token() {
				t.Fatalf("third's token %d not above second's %d", l3.Token(), l2.Token())
			}
			must(t, l3.Release(ctx))
		case <-time.After(20 * time.Second):
			t.Fatalf("third not admitted: %+v", e.stats(other, a))
		}
		st = e.stats(other, a)
		if st.ActiveCount != 0 || st.QueueLength != 0 || st.TotalEnqueued != 3 || st.TotalAdmitted != 3 || st.QuotaUsed != 3 {
			t.Fatalf("at the end: %+v, want nothing active or waiting, 3 enqueued and admitted, quota 3", st)
		}
	})
}

// TestEnqueueUnreachableEndsWithContext: while Redis cannot be reached the
// enqueue is retried until the caller's context ends, which ends the call
// with the context's error (not Redis's), and nothing is left behind.
func TestEnqueueUnreachableEndsWithContext(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		rdb := e.client()
		fault := &failScript{sha: scripts.ByName("enqueue").Hash(), fn: scripts.ByName("enqueue").Function()}
		rdb.AddHook(fault)
		o := e.opts()
		o.Prefix = e.prefix
		c, err := coordinator.New(rdb, o)
		must(t, err)
		defer c.Close()
		fault.on.Store(true)
		ctx, cancel := context.WithTimeout(ctxT(t), 500*time.Millisecond)
		defer cancel()
		_, err = c.EnqueueAndWait(ctx, "unreach.a", "x")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("enqueue while Redis is unreachable: %v, want the context's deadline", err)
		}
		fault.on.Store(false)
		if st := e.stats(c, "unreach.a"); st.QueueLength != 0 || st.ActiveCount != 0 {
			t.Fatalf("left behind: %+v", st)
		}
	})
}

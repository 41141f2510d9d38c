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
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// slowScript delays every call of one script (alone or in a pipeline) while
// on, and says when a delayed call starts.
type slowScript struct {
	sha     string
	delay   time.Duration
	on      atomic.Bool
	started chan struct{} // one send per delayed call, dropped when full
}

func (s *slowScript) hit(cmd redis.Cmder) bool {
	args := cmd.Args()
	return s.on.Load() && len(args) > 1 && strings.EqualFold(cmd.Name(), "evalsha") && args[1] == s.sha
}

func (s *slowScript) wait() {
	select {
	case s.started <- struct{}{}:
	default:
	}
	time.Sleep(s.delay)
}

func (s *slowScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (s *slowScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if s.hit(cmd) {
			s.wait()
		}
		return next(ctx, cmd)
	}
}
func (s *slowScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if s.hit(cmd) {
				s.wait()
				break
			}
		}
		return next(ctx, cmds)
	}
}

// TestReattachWhileGivingUp: a caller whose context ends is the last caller
// of its waiter, so the waiter gives up (cancel.lua). A second call with the
// same ID in the same process, made while that give-up is in flight, must
// not end with the first caller's context error: its own context is alive.
// (Found by TestRandomFaults: a re-attach got "context deadline exceeded"
// with a context that had no deadline.)
func TestReattachWhileGivingUp(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		slow := &slowScript{sha: scripts.ByName("cancel").Hash(), delay: time.Second, started: make(chan struct{}, 1)}
		rdb := e.client()
		rdb.AddHook(slow)
		o := e.opts()
		o.Logger = newTestLog(t, "").logger()
		c, err := coordinator.New(rdb, o)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		const a = "reattach.givingup"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, c, a, 1)[0]

		slow.on.Store(true)
		first := make(chan error, 1)
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		go func() {
			_, err := c.EnqueueAndWait(short, a, "x")
			first <- err
		}()
		select {
		case <-slow.started: // the first caller's context ended; its give-up is in flight
		case <-time.After(10 * time.Second):
			t.Fatal("the first caller's give-up never started")
		}
		type result struct {
			l   *coordinator.Lease
			err error
		}
		second := make(chan result, 1)
		alive, cancelAlive := context.WithTimeout(ctx, 20*time.Second)
		defer cancelAlive()
		go func() {
			l, err := c.EnqueueAndWait(alive, a, "x")
			second <- result{l, err}
		}()
		select {
		case err := <-first:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("first caller: %v, want its context's deadline", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("first caller never returned")
		}
		slow.on.Store(false)
		must(t, holder.Release(ctx))
		select {
		case r := <-second:
			if r.err != nil && alive.Err() == nil && (errors.Is(r.err, context.DeadlineExceeded) || errors.Is(r.err, context.Canceled)) {
				t.Fatalf("second caller (same ID, same process, during the first caller's give-up) ended with "+
					"the first caller's context error %q although its own context is alive", r.err)
			}
			if r.err != nil {
				t.Logf("second caller: %v", r.err)
			} else {
				must(t, r.l.Release(ctx))
			}
		case <-time.After(15 * time.Second):
			t.Fatal("second caller never returned")
		}
	})
}

package coordinator

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/scripts"
)

// failRenew fails the next `fail` renew.lua calls (all of them when fail is
// negative) and counts every renew.lua call, as a partition would.
type failRenew struct {
	sha, fn string
	fail    atomic.Int32
	calls   atomic.Int32
}

var errRenewInjected = errors.New("test: injected renew failure")

func (f *failRenew) hit(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	name := strings.ToLower(cmd.Name())
	if !(name == "evalsha" && args[1] == f.sha) && !(name == "fcall" && args[1] == f.fn) {
		return false
	}
	f.calls.Add(1)
	for {
		n := f.fail.Load()
		if n == 0 {
			return false
		}
		if n < 0 || f.fail.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (f *failRenew) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failRenew) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.hit(cmd) {
			cmd.SetErr(errRenewInjected)
			return errRenewInjected
		}
		return next(ctx, cmd)
	}
}
func (f *failRenew) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if f.hit(cmd) {
				for _, c := range cmds {
					c.SetErr(errRenewInjected)
				}
				return errRenewInjected
			}
		}
		return next(ctx, cmds)
	}
}

// heartbeatEnv is a Coordinator on miniredis whose renewals go through a
// failRenew, and one lease it holds. Its LeaseTTL is an hour, so that its
// own heartbeat loop never runs during the test: the test calls heartbeat.
func heartbeatEnv(t *testing.T) (*Coordinator, *failRenew, *Lease) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	f := &failRenew{sha: scripts.ByName("renew").Hash(), fn: scripts.ByName("renew").Function()}
	rdb.AddHook(f)
	c, err := New(rdb, Options{LeaseTTL: time.Hour, SweepInterval: -1, Logger: redistest.NewLog(t).Logger("")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.EnqueueAndWait(ctx, "heartbeat.retry", "held")
	if err != nil {
		t.Fatal(err)
	}
	return c, f, l
}

func renewedAt(l *Lease) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewedAt
}

// TestHeartbeatRetriesFailedRenewal: a renewal that fails is tried again in
// the same heartbeat round until it lands, not a third of LeaseTTL later.
func TestHeartbeatRetriesFailedRenewal(t *testing.T) {
	c, f, l := heartbeatEnv(t)
	before := renewedAt(l)
	f.fail.Store(2)
	c.heartbeat()
	if got := f.calls.Load(); got != 3 {
		t.Fatalf("renew.lua called %d times in one round with two failures, want 3 (two failed, one landed)", got)
	}
	if !renewedAt(l).After(before) {
		t.Fatal("the lease's renewal time did not move: the retry did not land")
	}
	select {
	case <-l.Lost():
		t.Fatal("the lease was lost")
	default:
	}
	// A round that lands at once makes one call.
	c.heartbeat()
	if got := f.calls.Load(); got != 4 {
		t.Fatalf("renew.lua called %d times after a clean round, want 4", got)
	}
}

// TestHeartbeatRetriesStopAtClose: renewals that keep failing are retried
// only until Close starts.
func TestHeartbeatRetriesStopAtClose(t *testing.T) {
	c, f, _ := heartbeatEnv(t)
	f.fail.Store(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.heartbeat()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for f.calls.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no retry of a failed renewal within 30 s (%d calls)", f.calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		c.Close()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("heartbeat still retrying 30 s after Close started")
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	n := f.calls.Load()
	// Nothing retries after both returned.
	time.Sleep(2500 * time.Millisecond)
	if got := f.calls.Load(); got != n {
		t.Fatalf("renew.lua called %d more times after Close returned", got-n)
	}
}

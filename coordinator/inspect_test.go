package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
)

// queueInOrder enqueues waiters one at a time (each is in the queue before
// the next starts), so their queue order is known.
func queueInOrder(t *testing.T, e *env, c *coordinator.Coordinator, action string, ids ...string) {
	t.Helper()
	base := e.stats(c, action).QueueLength
	for i, id := range ids {
		go func() { _, _ = c.EnqueueAndWait(ctxT(t), action, id) }()
		eventually(t, 10*time.Second, id+" queued", func() bool { return e.stats(c, action).QueueLength == base+int64(i+1) })
	}
}

func TestWaiting(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "inspect.wait"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holdN(t, c, a, 1)
		ids := []string{"w0", "w1", "w2", "w3", "w4"}
		queueInOrder(t, e, c, a, ids...)
		e.advance(2 * time.Second) // the miniredis clock is frozen; let the waits grow

		page, total, err := c.Waiting(ctx, a, 0, 10)
		must(t, err)
		if total != 5 || len(page) != 5 {
			t.Fatalf("total %d, page %+v: want 5 and 5", total, page)
		}
		for i, w := range page {
			if w.Position != int64(i) || w.ExecutionID != ids[i] || w.Owner != c.Owner() {
				t.Fatalf("entry %d: %+v, want position %d, %s of owner %s", i, w, i, ids[i], c.Owner())
			}
			if w.EnqueuedAt.IsZero() || w.Waited < time.Second || w.Waited > time.Minute {
				t.Fatalf("entry %d: enqueued at %v, waited %v: want a time and about 2 s", i, w.EnqueuedAt, w.Waited)
			}
			if i > 0 && !w.EnqueuedAt.After(page[i-1].EnqueuedAt) {
				t.Fatalf("entry %d enqueued at %v, not after entry %d (%v)", i, w.EnqueuedAt, i-1, page[i-1].EnqueuedAt)
			}
			st, err := c.ExecutionState(ctx, a, w.ExecutionID)
			must(t, err)
			if st.Position != w.Position || !st.EnqueuedAt.Equal(w.EnqueuedAt) || st.Owner != w.Owner {
				t.Fatalf("entry %d: %+v, but ExecutionState says %+v", i, w, st)
			}
		}

		page, total, err = c.Waiting(ctx, a, 2, 2)
		must(t, err)
		if total != 5 || len(page) != 2 || page[0].ExecutionID != "w2" || page[0].Position != 2 || page[1].ExecutionID != "w3" {
			t.Fatalf("offset 2, count 2: total %d, %+v", total, page)
		}
		page, total, err = c.Waiting(ctx, a, 5, 10)
		must(t, err)
		if total != 5 || len(page) != 0 || page == nil {
			t.Fatalf("past the end: total %d, %#v: want 5 and an empty page", total, page)
		}
		page, total, err = c.Waiting(ctx, a, math.MaxInt, coordinator.MaxInspectPage)
		must(t, err)
		if total != 5 || len(page) != 0 {
			t.Fatalf("offset MaxInt: total %d, %+v", total, page)
		}
		page, total, err = c.Waiting(ctx, "inspect.never", 0, 10)
		must(t, err)
		if total != 0 || len(page) != 0 {
			t.Fatalf("unknown action: total %d, %+v", total, page)
		}

		for _, bad := range []struct {
			action        string
			offset, count int
		}{{a, -1, 10}, {a, 0, 0}, {a, 0, coordinator.MaxInspectPage + 1}, {"nodot", 0, 10}} {
			if _, _, err := c.Waiting(ctx, bad.action, bad.offset, bad.count); !errors.Is(err, coordinator.ErrInvalidArgument) {
				t.Errorf("Waiting(%q, %d, %d): %v, want ErrInvalidArgument", bad.action, bad.offset, bad.count, err)
			}
		}
	})
}

func TestHolders(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "inspect.hold"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 2))
		leases := holdN(t, c, a, 2)
		hs, err := c.Holders(ctx, a)
		must(t, err)
		if len(hs) != 2 {
			t.Fatalf("holders %+v, want 2", hs)
		}
		for i, h := range hs {
			l := leases[i]
			if h.ExecutionID != l.ExecutionID() || h.Token != l.Token() || h.Owner != c.Owner() || !h.Acknowledged {
				t.Fatalf("holder %d: %+v, want %s token %d of %s, acknowledged", i, h, l.ExecutionID(), l.Token(), c.Owner())
			}
			if h.Since.IsZero() || !h.LeaseDeadline.After(h.Since) {
				t.Fatalf("holder %d: since %v, deadline %v", i, h.Since, h.LeaseDeadline)
			}
		}
		must(t, leases[0].Release(ctx))
		hs, err = c.Holders(ctx, a)
		must(t, err)
		if len(hs) != 1 || hs[0].ExecutionID != leases[1].ExecutionID() {
			t.Fatalf("after a release: %+v", hs)
		}
		if _, err := c.Holders(ctx, "no dot"); !errors.Is(err, coordinator.ErrInvalidArgument) {
			t.Fatalf("bad ref: %v", err)
		}
	})
}

// TestHoldersSkipsExpiredLeases writes entries in the documented formats
// (docs/keys.md) directly, so it also pins the parsing to them.
func TestHoldersSkipsExpiredLeases(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		base := keys.New(e.prefix).Action("inspect.raw").Base
		now, err := e.rdb.Time(ctx).Result()
		must(t, err)
		ms := now.UnixMilli()
		must(t, e.rdb.HSet(ctx, base+"holders",
			"live", fmt.Sprintf("7:abc:%d:%d:g", ms-1000, (ms-2000)*1000),
			"dead", fmt.Sprintf("6:abc:%d:%d:h", ms-9000, (ms-9000)*1000)).Err())
		must(t, e.rdb.ZAdd(ctx, base+"running",
			redis.Z{Score: float64(ms + 60000), Member: "live"}, redis.Z{Score: float64(ms - 1), Member: "dead"}).Err())
		hs, err := c.Holders(ctx, "inspect.raw")
		must(t, err)
		if len(hs) != 1 {
			t.Fatalf("holders %+v, want only the live one", hs)
		}
		h := hs[0]
		if h.ExecutionID != "live" || h.Token != 7 || h.Owner != "abc" || h.Acknowledged ||
			h.Since.UnixMilli() != ms-1000 || h.LeaseDeadline.UnixMilli() != ms+60000 {
			t.Fatalf("holder %+v", h)
		}
		if err := c.ForgetAction(ctx, "inspect.raw"); !errors.Is(err, coordinator.ErrNotIdle) {
			t.Fatalf("forget with a live lease: %v, want ErrNotIdle", err)
		}
		// An expired lease does not keep the action busy.
		must(t, e.rdb.ZRem(ctx, base+"running", "live").Err())
		must(t, c.ForgetAction(ctx, "inspect.raw"))
		if ks := actionKeys(t, e, "inspect.raw"); len(ks) != 0 {
			t.Fatalf("keys left: %v", ks)
		}
	})
}

func TestForgetAction(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "inspect.forget"
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		l1 := holdN(t, c, a, 1)[0]
		eventually(t, 5*time.Second, "action listed", func() bool { return listed(t, c, a) })
		if err := c.ForgetAction(ctx, a); !errors.Is(err, coordinator.ErrNotIdle) {
			t.Fatalf("forget while held: %v, want ErrNotIdle", err)
		}
		got := waiters(t, c, a, "fw", 1)
		eventually(t, 5*time.Second, "queued", func() bool { return e.stats(c, a).QueueLength == 1 })
		must(t, l1.Release(ctx))
		var l2 *coordinator.Lease
		select {
		case l2 = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("waiter not admitted")
		}
		queueInOrder(t, e, c, a, "fw-late")
		before := actionKeys(t, e, a)
		if err := c.ForgetAction(ctx, a); !errors.Is(err, coordinator.ErrNotIdle) || !strings.Contains(err.Error(), "1 waiting") {
			t.Fatalf("forget while queued: %v, want ErrNotIdle naming 1 waiting", err)
		}
		if after := actionKeys(t, e, a); !slices.Equal(before, after) || !listed(t, c, a) {
			t.Fatalf("a refused forget changed keys %v to %v (listed: %v)", before, after, listed(t, c, a))
		}
		removed, err := c.CancelExecution(ctx, a, "fw-late")
		must(t, err)
		if !removed {
			t.Fatal("fw-late not canceled")
		}
		must(t, l2.Release(ctx))

		must(t, c.ForgetAction(ctx, a))
		if listed(t, c, a) {
			t.Fatal("forgotten action still listed")
		}
		k := keys.New(e.prefix).Action(a)
		if ks := actionKeys(t, e, a); !slices.Equal(ks, []string{k.Meta()}) {
			t.Fatalf("keys left: %v, want only meta", ks)
		}
		meta, err := e.rdb.HGetAll(ctx, k.Meta()).Result()
		must(t, err)
		if len(meta) != 2 || meta["fence"] != fmt.Sprint(l2.Token()) || meta["seq"] == "" {
			t.Fatalf("meta left: %v, want only fence %d and seq", meta, l2.Token())
		}
		must(t, c.ForgetAction(ctx, a)) // already forgotten: nothing to do

		// Used again: tokens go on increasing, the limit still applies, and
		// this process lists it again.
		l3 := holdN(t, c, a, 1)[0]
		if l3.Token() <= l2.Token() {
			t.Fatalf("token after forget %d, not above %d", l3.Token(), l2.Token())
		}
		if st := e.stats(c, a); st.MaxConcurrent != 1 || st.LimitSource != "action:"+a || st.ActiveCount != 1 {
			t.Fatalf("stats after reuse: %+v", st)
		}
		eventually(t, 5*time.Second, "listed again", func() bool { return listed(t, c, a) })

		if err := c.ForgetAction(ctx, "no dot"); !errors.Is(err, coordinator.ErrInvalidArgument) {
			t.Fatalf("bad ref: %v", err)
		}
	})
}

func listed(t *testing.T, c *coordinator.Coordinator, action string) bool {
	t.Helper()
	refs, _, err := c.Actions(context.Background(), 0, 1000)
	must(t, err)
	return slices.Contains(refs, action)
}

// actionKeys lists an action's keys, sorted, but for grant and wake keys
// (wake-up lists that expire by themselves).
func actionKeys(t *testing.T, e *env, action string) []string {
	t.Helper()
	base := keys.New(e.prefix).Action(action).Base
	var out []string
	for _, k := range e.keys() {
		rest, ok := strings.CutPrefix(k, base)
		if ok && !strings.HasPrefix(rest, "grant:") && !strings.HasPrefix(rest, "wake:") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// raceHook runs fn once, just before the first HMGET it sees: between
// ForgetAction's idle check and its MULTI.
type raceHook struct {
	armed atomic.Bool
	fn    func()
}

func (h *raceHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *raceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "hmget") && h.armed.CompareAndSwap(true, false) {
			h.fn()
		}
		return next(ctx, cmd)
	}
}
func (h *raceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestForgetActionRacesAnAdmission: an execution admitted while ForgetAction
// checks the action makes it look again and refuse, instead of deleting a
// holder's keys.
func TestForgetActionRacesAnAdmission(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "inspect.race"
		other := e.coordinator(e.opts())
		holdN(t, other, a, 1)[0].Release(ctx) // the action exists and is idle
		hook := &raceHook{}
		rdb := e.client()
		rdb.AddHook(hook)
		c, err := coordinator.New(rdb, e.opts())
		must(t, err)
		t.Cleanup(func() { c.Close() })
		var lease *coordinator.Lease
		hook.fn = func() {
			l, err := other.EnqueueAndWait(ctx, a, "sneaky")
			if err != nil {
				t.Error(err)
			}
			lease = l
		}
		hook.armed.Store(true)
		if err := c.ForgetAction(ctx, a); !errors.Is(err, coordinator.ErrNotIdle) {
			t.Fatalf("forget racing an admission: %v, want ErrNotIdle", err)
		}
		if hook.armed.Load() || lease == nil {
			t.Fatal("the admission did not run inside ForgetAction")
		}
		hs, err := c.Holders(ctx, a)
		must(t, err)
		if len(hs) != 1 || hs[0].ExecutionID != "sneaky" || hs[0].Token != lease.Token() {
			t.Fatalf("holders after the race: %+v", hs)
		}
		must(t, lease.Release(ctx))
	})
}

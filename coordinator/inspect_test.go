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

// TestHoldersListsExpiredEntries writes entries in the documented formats
// (docs/keys.md) directly, so it also pins the parsing to them. Every running
// entry is listed, as the core counts it, expired or not; ForgetAction has
// the core reclaim the expired ones and refuses while any entry is left.
func TestHoldersListsExpiredEntries(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "inspect.raw"
		k := keys.New(e.prefix).Action(a)
		now, err := e.rdb.Time(ctx).Result()
		must(t, err)
		ms := now.UnixMilli()
		// live: a grant of owner abc, due in a minute; dead: a lease past its
		// deadline; bare: a running entry whose holders value is missing.
		must(t, e.rdb.HSet(ctx, k.Holders(),
			"live", fmt.Sprintf("7:abc:%d:%d:g", ms-1000, (ms-2000)*1000),
			"dead", fmt.Sprintf("6:abc:%d:%d:h", ms-9000, (ms-9000)*1000)).Err())
		must(t, e.rdb.ZAdd(ctx, k.Running(), redis.Z{Score: float64(ms + 60000), Member: "live"},
			redis.Z{Score: float64(ms - 1), Member: "dead"}, redis.Z{Score: float64(ms - 5), Member: "bare"}).Err())
		hs, err := c.Holders(ctx, a)
		must(t, err)
		if len(hs) != 3 {
			t.Fatalf("holders %+v, want all 3 running entries", hs)
		}
		if st := e.stats(c, a); st.ActiveCount != int64(len(hs)) {
			t.Fatalf("active count %d, but %d holders listed", st.ActiveCount, len(hs))
		}
		bare, dead, live := hs[0], hs[1], hs[2]
		if bare.ExecutionID != "bare" || bare.Token != 0 || bare.Owner != "" || !bare.Expired ||
			bare.LeaseDeadline.UnixMilli() != ms-5 {
			t.Fatalf("entry without a holders value: %+v", bare)
		}
		if dead.ExecutionID != "dead" || dead.Token != 6 || !dead.Acknowledged || !dead.Expired ||
			dead.Since.UnixMilli() != ms-9000 || dead.LeaseDeadline.UnixMilli() != ms-1 {
			t.Fatalf("expired lease: %+v", dead)
		}
		if live.ExecutionID != "live" || live.Token != 7 || live.Owner != "abc" || live.Acknowledged || live.Expired ||
			live.Since.UnixMilli() != ms-1000 || live.LeaseDeadline.UnixMilli() != ms+60000 {
			t.Fatalf("live grant: %+v", live)
		}

		// The expired entries are reclaimed by the core; the live one keeps
		// the action busy.
		err = c.ForgetAction(ctx, a)
		if !errors.Is(err, coordinator.ErrNotIdle) || !strings.Contains(err.Error(), "0 waiting and 1 holding") {
			t.Fatalf("forget with a live grant: %v, want ErrNotIdle naming 1 holding", err)
		}
		hs, err = c.Holders(ctx, a)
		must(t, err)
		if len(hs) != 1 || hs[0].ExecutionID != "live" {
			t.Fatalf("holders after forget reclaimed the expired: %+v", hs)
		}
		if st := e.stats(c, a); st.TotalReclaimed != 2 || st.ActiveCount != 1 {
			t.Fatalf("after forget: reclaimed %d, active %d: want 2 and 1", st.TotalReclaimed, st.ActiveCount)
		}

		// Once the grant's deadline passes (its token was read and owner abc
		// is dead), forget reclaims it too and forgets the action.
		must(t, e.rdb.ZAdd(ctx, k.Running(), redis.Z{Score: float64(ms - 1), Member: "live"}).Err())
		must(t, c.ForgetAction(ctx, a))
		if ks := actionKeys(t, e, a); len(ks) != 0 {
			t.Fatalf("keys left: %v, want none (no fence or seq was ever set)", ks)
		}
	})
}

// TestForgetActionNamesUnreclaimedEntries: one sweep reclaims at most 1000
// expired entries (MAX_RECLAIM in scripts/lib.lua); ForgetAction sweeps once
// per call, so with 1001 it refuses, naming the one left, and the next call
// reclaims it and forgets the action.
func TestForgetActionNamesUnreclaimedEntries(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "inspect.many"
		k := keys.New(e.prefix).Action(a)
		now, err := e.rdb.Time(ctx).Result()
		must(t, err)
		ms := now.UnixMilli()
		_, err = e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range 1001 {
				id := fmt.Sprintf("x%d", i)
				p.HSet(ctx, k.Holders(), id, fmt.Sprintf("%d:abc:%d:%d:h", i+1, ms-9000, (ms-9000)*1000))
				p.ZAdd(ctx, k.Running(), redis.Z{Score: float64(ms - 1000), Member: id})
			}
			return nil
		})
		must(t, err)
		err = c.ForgetAction(ctx, a)
		if err == nil {
			// The sweep ran twice (a go-redis retry of a slow reply on a
			// loaded machine): nothing was left to name.
			t.Log("the first forget reclaimed every entry (its sweep was retried)")
		} else {
			if !errors.Is(err, coordinator.ErrNotIdle) ||
				!strings.HasSuffix(err.Error(), "0 waiting and 1 holding a slot (1 past its deadline, not yet reclaimed)") {
				t.Fatalf("forget with 1001 expired entries: %v, want ErrNotIdle naming the 1 left", err)
			}
			if st := e.stats(c, a); st.TotalReclaimed != 1000 || st.ActiveCount != 1 {
				t.Fatalf("after one sweep: reclaimed %d, active %d: want 1000 and 1", st.TotalReclaimed, st.ActiveCount)
			}
		}
		must(t, c.ForgetAction(ctx, a))
		if ks := actionKeys(t, e, a); len(ks) != 0 {
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

		k := keys.New(e.prefix).Action(a)
		meta, err := e.rdb.HGetAll(ctx, k.Meta()).Result()
		must(t, err)
		if _, ok := meta["due"]; !ok {
			t.Fatalf("meta before forget: %v, want due among its fields", meta)
		}
		if _, ok := meta["totals"]; !ok {
			t.Fatalf("meta before forget: %v, want totals among its fields", meta)
		}
		must(t, c.ForgetAction(ctx, a))
		if listed(t, c, a) {
			t.Fatal("forgotten action still listed")
		}
		if ks := actionKeys(t, e, a); !slices.Equal(ks, []string{k.Meta()}) {
			t.Fatalf("keys left: %v, want only meta", ks)
		}
		meta, err = e.rdb.HGetAll(ctx, k.Meta()).Result()
		must(t, err)
		if f := strings.Split(meta["state"], ","); len(meta) != 2 || len(f) != 4 || f[3] != fmt.Sprint(l2.Token()) || meta["limit_source"] == "" {
			t.Fatalf("meta left: %v, want only state (fence %d) and limit_source", meta, l2.Token())
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
		if cc, ok := rdb.(*redis.ClusterClient); ok {
			// ForgetAction's WATCH runs on a node's own client, which the
			// cluster client's hooks do not reach.
			cc.OnNewNode(func(n *redis.Client) { n.AddHook(hook) })
		} else {
			rdb.AddHook(hook)
		}
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

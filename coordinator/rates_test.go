package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// Tests of rates (throttles) and quotas (issue 8). On miniredis the Redis
// clock only moves when the test moves it (env.advance); on the real tier it
// is the server's.

// sinceMs is when the execution was granted, on the Redis clock (ms).
func sinceMs(t *testing.T, c *coordinator.Coordinator, action, id string) int64 {
	t.Helper()
	st, err := c.ExecutionState(context.Background(), action, id)
	must(t, err)
	if st.Status != coordinator.StatusRunning {
		t.Fatalf("%s: %s, want running", id, st.Status)
	}
	return st.RunningSince.UnixMilli()
}

// enqueueAsync starts EnqueueAndWait and waits until the execution is in the
// queue (or admitted), so that arrivals are ordered.
func enqueueAsync(t *testing.T, e *env, c *coordinator.Coordinator, ctx context.Context, action, id string) chan error {
	t.Helper()
	done := make(chan error, 1)
	var lease atomic.Pointer[coordinator.Lease]
	go func() {
		l, err := c.EnqueueAndWait(ctx, action, id)
		lease.Store(l)
		done <- err
	}()
	eventually(t, 5*time.Second, id+" enqueued", func() bool {
		st, err := c.ExecutionState(context.Background(), action, id)
		return err == nil && st.Status != coordinator.StatusUnknown
	})
	return done
}

// runClock moves miniredis's clock by step every 2 ms of real time until
// the test ends (a no-op on the real tier, whose clock runs by itself).
func (e *env) runClock(t *testing.T, step time.Duration) {
	if e.mr == nil {
		return
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				e.advance(step)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// recv waits for one result, with a generous bound.
func recv(t *testing.T, ch chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no result in 30s", what)
		return nil
	}
}

// TestRateThrottleBasics: a burst is admitted at once, the next execution
// waits for its token (counted as throttled once, eligible at the token's
// time), and is admitted when the token comes, by the process's own timer.
// A re-attach takes no token. The tokens come 5 s apart, so a CPU-starved
// test has seconds of room before the next token changes what it checks.
func TestRateThrottleBasics(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "rate.basic"
		rate := limits.Rate{Limit: 2, Per: 10 * time.Second, Burst: 2}
		c := e.coordinator(e.opts())
		must(t, c.SetRateLimit(ctx, limits.Action(a), rate))
		first := holdN(t, c, a, 2) // the burst
		done := enqueueAsync(t, e, c, ctx, a, "third")
		st := e.stats(c, a)
		if st.QueueLength != 1 || st.TotalThrottled != 1 || st.ThrottledUntil.IsZero() {
			t.Fatalf("third should wait for a token: %+v", st)
		}
		if st.Rate != rate || st.RateSource != "action:"+a {
			t.Fatalf("rate in force: %v from %q", st.Rate, st.RateSource)
		}
		e.advance(5 * time.Second)
		if err := recv(t, done, "third"); err != nil {
			t.Fatal(err)
		}
		st = e.stats(c, a)
		if st.ActiveCount != 3 || st.QueueLength != 0 || st.TotalThrottled != 1 || !st.ThrottledUntil.IsZero() {
			t.Fatalf("after the token: %+v", st)
		}
		granted := sinceMs(t, c, a, "third")
		first0 := sinceMs(t, c, a, first[0].ExecutionID())
		if granted-first0 < 4999 {
			t.Fatalf("third admitted %d ms after the burst, before its token (5000 ms)", granted-first0)
		}

		// A redelivered request re-attaches (here in another process) and
		// takes no token: the next waiter's token time does not move. With
		// one token an hour, that waiter still waits however slow the
		// machine is.
		const b = "rate.reattach"
		must(t, c.SetRateLimit(ctx, limits.Action(b), limits.Rate{Limit: 1, Per: time.Hour, Burst: 1}))
		held := holdN(t, c, b, 1)[0]
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		enqueueAsync(t, e, c, cctx, b, "next")
		before := e.stats(c, b)
		if before.QueueLength != 1 || before.TotalThrottled != 1 || before.ThrottledUntil.IsZero() {
			t.Fatalf("next should wait for the hour's token: %+v", before)
		}
		other := e.coordinator(e.opts())
		l, err := other.EnqueueAndWait(ctx, b, held.ExecutionID())
		if err != nil || l.Token() != held.Token() {
			t.Fatalf("re-attach of a running execution: %v, %v (token %d before)", l, err, held.Token())
		}
		if st := e.stats(c, b); !st.ThrottledUntil.Equal(before.ThrottledUntil) || st.TotalThrottled != 1 ||
			st.TotalEnqueued != 2 || st.QueueLength != 1 {
			t.Fatalf("a re-attach moved the throttle or the totals: %+v (before: %+v)", st, before)
		}
	})
}

// sinceToken is the fencing token of a running execution.
func sinceToken(t *testing.T, c *coordinator.Coordinator, action, id string) int64 {
	t.Helper()
	st, err := c.ExecutionState(context.Background(), action, id)
	must(t, err)
	return st.Token
}

// TestRateFIFOBehindThrottledHead: with free slots, a throttled head is
// never passed: executions are admitted one token at a time, in arrival
// order, whichever process they wait in.
func TestRateFIFOBehindThrottledHead(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "rate.fifo"
		c := e.coordinator(e.opts())
		other := e.coordinator(e.opts())
		must(t, c.SetRateLimit(ctx, limits.Action(a), limits.Rate{Limit: 10, Per: time.Second, Burst: 1}))
		holdN(t, c, a, 1)
		type grant struct {
			token int64
			id    string
		}
		grants := make(chan grant, 5)
		var dones []chan error
		for i := 0; i < 5; i++ {
			id := fmt.Sprintf("w%d", i)
			p := c
			if i%2 == 1 {
				p = other
			}
			ch := make(chan error, 1)
			go func() {
				l, err := p.EnqueueAndWait(ctx, a, id)
				if err == nil {
					grants <- grant{l.Token(), id}
				}
				ch <- err
			}()
			eventually(t, 5*time.Second, id+" enqueued", func() bool {
				st, err := c.ExecutionState(ctx, a, id)
				return err == nil && st.Status != coordinator.StatusUnknown
			})
			dones = append(dones, ch)
		}
		e.runClock(t, 4*time.Millisecond) // twice real time: heartbeats (LeaseTTL/3 real) keep owners alive
		for i, ch := range dones {
			if err := recv(t, ch, fmt.Sprint("w", i)); err != nil {
				t.Fatal(err)
			}
		}
		var order []grant
		for range dones {
			order = append(order, <-grants)
		}
		slices.SortFunc(order, func(x, y grant) int { return int(x.token - y.token) })
		for i, g := range order {
			if g.id != fmt.Sprintf("w%d", i) {
				t.Fatalf("grants out of arrival order: %v", order)
			}
		}
	})
}

// TestRateGiveUpsTakeNoToken: waiters that cancel or time out while the head
// is throttled take no token: the one behind them gets the next token. The
// tokens come 5 s apart: a give-up that took one would move the last
// waiter's past 10 s, and a CPU-starved test has 5 s of room below that.
func TestRateGiveUpsTakeNoToken(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "rate.giveup"
		c := e.coordinator(e.opts())
		o := e.opts()
		o.QueueTimeout = 200 * time.Millisecond
		short := e.coordinator(o)
		must(t, c.SetRateLimit(ctx, limits.Action(a), limits.Rate{Limit: 1, Per: 5 * time.Second, Burst: 1}))
		first := holdN(t, c, a, 1)[0]
		start := sinceMs(t, c, a, first.ExecutionID())

		cctx, cancel := context.WithCancel(ctx)
		canceled := enqueueAsync(t, e, c, cctx, a, "canceled")
		timedOut := enqueueAsync(t, e, short, ctx, a, "timedout")
		last := enqueueAsync(t, e, c, ctx, a, "last")
		cancel()
		if err := recv(t, canceled, "canceled"); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled: %v", err)
		}
		e.advance(300 * time.Millisecond) // the Redis clock must pass the queue timeout too
		if err := recv(t, timedOut, "timedout"); !errors.Is(err, coordinator.ErrQueueTimeout) {
			t.Fatalf("timedout: %v", err)
		}
		e.advance(4700 * time.Millisecond)
		if err := recv(t, last, "last"); err != nil {
			t.Fatal(err)
		}
		if d := sinceMs(t, c, a, "last") - start; d < 4999 || d > 9999 {
			t.Fatalf("last admitted %d ms after the first: want its token at 5000 ms (not 10000 or 15000: give-ups take none)", d)
		}
		st := e.stats(c, a)
		if st.TotalCanceled != 1 || st.TotalTimedOut != 1 || st.TotalAdmitted != 2 {
			t.Fatalf("totals: %+v", st)
		}
	})
}

// countHook counts the commands a client sends, with their names.
type countHook struct {
	mu   sync.Mutex
	cmds []string
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.add(c)
		}
		return next(ctx, cmds)
	}
}

func (h *countHook) add(cmd redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmds = append(h.cmds, cmd.Name())
}

func (h *countHook) since(n int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.cmds[n:])
}

func (h *countHook) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.cmds)
}

// TestThrottledHeadWakesOnTime: the head waits for its token without a
// single command from its process, and is admitted when the token comes,
// by one script call from the process's timer.
func TestThrottledHeadWakesOnTime(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "rate.ontime"
		admin := e.coordinator(e.opts())
		must(t, admin.SetRateLimit(ctx, limits.Action(a), limits.Rate{Limit: 1, Per: 1500 * time.Millisecond, Burst: 1}))
		hook := &countHook{}
		rdb, wait := e.client(), e.waitClient()
		rdb.AddHook(hook)
		wait.AddHook(hook)
		o := e.opts()
		o.BlockTimeout, o.PolicyRefresh, o.LeaseTTL = 30*time.Second, 30*time.Second, 90*time.Second
		o.WaitClient = wait
		c, err := coordinator.New(rdb, o)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		must(t, c.Ready(ctx)) // scripts loaded: a call is one command, no NOSCRIPT fallback

		first := holdN(t, c, a, 1)[0]
		start := sinceMs(t, admin, a, first.ExecutionID())
		done := make(chan error, 1)
		go func() {
			_, err := c.EnqueueAndWait(ctx, a, "head")
			done <- err
		}()
		// Queued, throttled, and its process blocked in its BLPOP.
		eventually(t, 5*time.Second, "head queued and blocking", func() bool {
			st, err := admin.QueueStats(ctx, a)
			if err != nil || st.QueueLength != 1 {
				return false
			}
			cmds := slices.DeleteFunc(hook.since(0), func(n string) bool { return n == "hello" || n == "client" })
			return len(cmds) > 0 && cmds[len(cmds)-1] == "blpop"
		})
		mark := hook.len()
		until := e.stats(admin, a).ThrottledUntil
		// miniredis: the token's time comes on the Redis clock now, and the
		// process's timer (real time) fires when it would have.
		if e.mr != nil {
			e.advance(until.Sub(e.clock))
		}
		if err := recv(t, done, "head"); err != nil {
			t.Fatal(err)
		}
		cmds := hook.since(mark)
		scripts := 0
		for _, name := range cmds {
			switch name {
			case "evalsha", "eval", "fcall":
				scripts++
			case "blpop", "hello", "client": // the wait, and a new pooled connection's handshake
			default:
				t.Errorf("unexpected command while throttled: %s (all: %v)", name, cmds)
			}
		}
		if scripts != 1 {
			t.Errorf("want exactly one script call (the tick) between queueing and admission, got %v", cmds)
		}
		late := sinceMs(t, admin, a, "head") - until.UnixMilli()
		t.Logf("%s: head admitted %d ms after its token time (%d ms after the first)", e.tier, late,
			sinceMs(t, admin, a, "head")-start)
		// The timer fires at the token's time; 10 s of room for a CPU-starved
		// test still tells it from the fallbacks (BlockTimeout and
		// PolicyRefresh, 30 s; a sweep would be a second script call).
		if late < 0 || late > 10000 {
			t.Errorf("head admitted %d ms after its token time", late)
		}
	})
}

// TestRateBoundRandomized: several processes, random arrivals, holds,
// cancels and queue timeouts: over every window of the admissions (Redis
// clock) the count stays within Limit*T/Per + Burst, grants follow arrival
// order, and the totals reconcile.
func TestRateBoundRandomized(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		const (
			a     = "rate.random"
			procs = 3
			n     = 90
			limit = 20
			per   = time.Second
			burst = 4
		)
		ctx := ctxT(t)
		var cs []*coordinator.Coordinator
		for i := 0; i < procs; i++ {
			o := e.opts()
			o.AckTimeout = 10 * time.Second // see TestStressLimitAndFIFO
			o.QueueTimeout = time.Duration(300+200*i) * time.Millisecond
			cs = append(cs, e.coordinator(o))
		}
		must(t, cs[0].SetRateLimit(ctx, limits.Pack("rate"), limits.Rate{Limit: limit, Per: per, Burst: burst}))
		must(t, cs[0].SetConcurrencyLimit(ctx, limits.Action(a), 3))

		e.runClock(t, 4*time.Millisecond) // miniredis: the Redis clock at twice real time
		type rec struct{ since, token, seq int64 }
		var mu sync.Mutex
		var got []rec
		var outcomes sync.Map
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("r-%03d", i)
				c := cs[i%procs]
				wctx, cancel := context.WithCancel(ctx)
				defer cancel()
				if rand.IntN(6) == 0 {
					time.AfterFunc(time.Duration(rand.IntN(300))*time.Millisecond, cancel)
				}
				l, err := c.EnqueueAndWait(wctx, a, id)
				switch {
				case err == nil:
					st, serr := c.ExecutionState(ctx, a, id)
					if serr != nil || st.Status != coordinator.StatusRunning {
						t.Errorf("%s: state %+v %v", id, st, serr)
						return
					}
					mu.Lock()
					got = append(got, rec{since: st.RunningSince.UnixMilli(), token: l.Token(), seq: l.Seq()})
					mu.Unlock()
					outcomes.Store(id, "admitted")
					time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
					if err := l.Release(ctx); err != nil {
						t.Errorf("%s: release: %v", id, err)
					}
				case errors.Is(err, context.Canceled):
					outcomes.Store(id, "canceled")
				case errors.Is(err, coordinator.ErrQueueTimeout):
					outcomes.Store(id, "timedout")
				default:
					t.Errorf("%s: %v", id, err)
				}
			}()
		}
		wg.Wait()

		mu.Lock()
		defer mu.Unlock()
		if len(got) < 10 {
			t.Fatalf("only %d admissions", len(got))
		}
		slices.SortFunc(got, func(x, y rec) int { return int(x.token - y.token) })
		for i := 1; i < len(got); i++ {
			if got[i].seq < got[i-1].seq {
				t.Fatalf("grant %d (seq %d) before an earlier arrival (seq %d)", got[i].token, got[i].seq, got[i-1].seq)
			}
			if got[i].since < got[i-1].since {
				t.Fatalf("grant times out of token order")
			}
		}
		// Every window [got[i], got[j]] of the admissions: times are whole ms,
		// so the real window is up to 1 ms longer.
		perMs := float64(per.Milliseconds())
		worst := 0.0
		for i := range got {
			for j := i; j < len(got); j++ {
				span := float64(got[j].since-got[i].since) + 1
				count := float64(j - i + 1)
				bound := limit*span/perMs + burst
				if count > bound {
					t.Fatalf("%v admissions in %v ms: over the bound %.2f", count, span, bound)
				}
				worst = max(worst, count/bound)
			}
		}
		counts := map[string]int{}
		outcomes.Range(func(_, v any) bool { counts[v.(string)]++; return true })
		st := e.stats(cs[0], a)
		t.Logf("%s: %d admissions over %d ms, %v; closest window at %.0f%% of the bound; throttled %d",
			e.tier, len(got), got[len(got)-1].since-got[0].since, counts, 100*worst, st.TotalThrottled)
		if st.TotalEnqueued != st.TotalAdmitted+st.TotalTimedOut+st.TotalCanceled+st.TotalAbandoned+st.QueueLength {
			t.Fatalf("totals do not reconcile: %+v", st)
		}
		if st.TotalAdmitted != int64(counts["admitted"]) || st.TotalThrottled == 0 {
			t.Fatalf("admitted %d (stats) vs %d (test); throttled %d", st.TotalAdmitted, counts["admitted"], st.TotalThrottled)
		}
	})
}

// TestQuotaCounts: a quota counts accepted executions (admitted and
// waiting) per window; a request over it is refused with a QuotaError and
// nothing stored; cancels and timeouts give their reservation back; a
// re-attach does not count twice; the window rolls over on the Redis clock.
func TestQuotaCounts(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "quota.count"
		// A minute window on miniredis, whose clock jumps to the next minute
		// below; an hour on the real servers, whose clock runs on, with room
		// for the whole test in it.
		win := limits.Minute
		if e.mr == nil {
			win = limits.Hour
		}
		e.quotaWindowRoom(t, win, time.Minute) // miniredis too: its clock starts at real time, and the test advances it
		// Long leases: the miniredis clock jumps to the next minute below.
		o := e.opts()
		o.LeaseTTL = 10 * time.Minute
		c, other := e.coordinator(o), e.coordinator(o)
		o.QueueTimeout = 200 * time.Millisecond
		short := e.coordinator(o)
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 2))
		must(t, c.SetQuota(ctx, limits.Pack("quota"), limits.Quota{Limit: 4, Window: win}))

		held := holdN(t, c, a, 2)
		w1 := enqueueAsync(t, e, c, ctx, a, "w1")
		cctx, cancel := context.WithCancel(ctx)
		w2 := enqueueAsync(t, e, c, cctx, a, "w2")
		st := e.stats(c, a)
		if st.QuotaUsed != 4 || st.Quota != (limits.Quota{Limit: 4, Window: win}) || st.QuotaSource != "pack:quota" {
			t.Fatalf("quota after 4 accepted: %+v", st)
		}

		// Over the quota: refused, nothing stored.
		before := e.settledDump(t)
		_, err := c.EnqueueAndWait(ctx, a, "over")
		var qe *coordinator.QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, coordinator.ErrQuotaExceeded) {
			t.Fatalf("over the quota: %v", err)
		}
		if !qe.RetryAt.Equal(st.QuotaResetAt) || qe.RetryAt.UnixMilli()%60000 != 0 || qe.Source != "pack:quota" || qe.Quota != (limits.Quota{Limit: 4, Window: win}) {
			t.Fatalf("RetryAt %v (stats: reset at %v), quota %v from %q", qe.RetryAt, st.QuotaResetAt, qe.Quota, qe.Source)
		}
		if after := e.dump(); !sameExceptTotals(before, after) {
			t.Fatalf("a refused request changed Redis:\nbefore %v\nafter  %v", before, after)
		}
		if st := e.stats(c, a); st.TotalQuotaRejected != 1 || st.TotalEnqueued != 4 {
			t.Fatalf("after the refusal: %+v", st)
		}

		// A re-attach of a waiting execution by another process does not count.
		reattached := make(chan error, 1)
		go func() {
			_, err := other.EnqueueAndWait(ctx, a, "w1")
			reattached <- err
		}()
		if err := recv(t, w1, "w1 superseded"); !errors.Is(err, coordinator.ErrCanceled) {
			t.Fatalf("w1's first waiter: %v", err)
		}
		if st := e.stats(c, a); st.QuotaUsed != 4 || st.TotalEnqueued != 4 {
			t.Fatalf("a re-attach counted: %+v", st)
		}

		// A cancel gives its reservation back; so does a timeout. The
		// execution that times out (w3, through a process with a short
		// QueueTimeout) is enqueued only now, in the room the cancel made:
		// on the real servers its timer runs on the real clock, and none of
		// the checks above may depend on how long the machine takes to reach
		// them.
		cancel()
		if err := recv(t, w2, "w2"); !errors.Is(err, context.Canceled) {
			t.Fatalf("w2: %v", err)
		}
		if st := e.stats(c, a); st.QuotaUsed != 3 {
			t.Fatalf("after a cancel: used %d, want 3", st.QuotaUsed)
		}
		w3 := enqueueAsync(t, e, short, ctx, a, "w3")
		e.advance(300 * time.Millisecond)
		if err := recv(t, w3, "w3"); !errors.Is(err, coordinator.ErrQueueTimeout) {
			t.Fatalf("w3: %v", err)
		}
		if st := e.stats(c, a); st.QuotaUsed != 3 || st.TotalEnqueued != 5 || st.TotalTimedOut != 1 {
			t.Fatalf("after a timeout: %+v, want 3 used of 5 enqueued", st)
		}
		// Released executions still count: they were accepted this window.
		must(t, held[0].Release(ctx))
		if err := recv(t, reattached, "w1 re-attached"); err != nil {
			t.Fatal(err)
		}
		w6 := enqueueAsync(t, e, c, ctx, a, "w6")
		if st := e.stats(c, a); st.QuotaUsed != 4 {
			t.Fatalf("used %d, want 4", st.QuotaUsed)
		}
		if _, err := c.EnqueueAndWait(ctx, a, "over2"); !errors.Is(err, coordinator.ErrQuotaExceeded) {
			t.Fatalf("fifth accepted in the window: %v", err)
		}
		if e.mr == nil {
			return // the next minute is too far away in real time: the rollover runs on miniredis
		}
		e.advance(e.stats(c, a).QuotaResetAt.Sub(e.clock)) // to the next window
		if st := e.stats(c, a); st.QuotaUsed != 0 {
			t.Fatalf("new window: used %d", st.QuotaUsed)
		}
		must(t, held[1].Release(ctx))
		if err := recv(t, w6, "w6"); err != nil {
			t.Fatal(err)
		}
		if st := e.stats(c, a); st.QuotaUsed != 0 {
			t.Fatalf("an admission of last window's waiter counted in the new window: %d", st.QuotaUsed)
		}
		enqueueAsync(t, e, c, ctx, a, "next-window")
		if st := e.stats(c, a); st.QuotaUsed != 1 || st.TotalQuotaRejected != 2 {
			t.Fatalf("new window: %+v", st)
		}
	})
}

// dump reads every key under the env's prefix as type and value.
func (e *env) dump() map[string]string {
	ctx := context.Background()
	out := map[string]string{}
	for _, k := range e.keys() {
		typ := e.rdb.Type(ctx, k).Val()
		var v any
		switch typ {
		case "string":
			v = e.rdb.Get(ctx, k).Val()
		case "list":
			v = e.rdb.LRange(ctx, k, 0, -1).Val()
		case "hash":
			v = e.rdb.HGetAll(ctx, k).Val()
		case "zset":
			v = e.rdb.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "set":
			m := e.rdb.SMembers(ctx, k).Val()
			slices.Sort(m)
			v = m
		}
		out[k] = fmt.Sprintf("%s %v", typ, v)
	}
	return out
}

// settledDump is dump once the keys have stopped changing: calls that
// returned leave background writes behind (the actions index, the sweep
// index), which must not land between a test's "before" and "after".
func (e *env) settledDump(t *testing.T) map[string]string {
	t.Helper()
	prev := e.dump()
	for start := time.Now(); ; {
		time.Sleep(50 * time.Millisecond)
		cur := e.dump()
		if maps.Equal(prev, cur) {
			return cur
		}
		if time.Since(start) > redistest.SlowFloor {
			t.Fatalf("Redis still changing after %v", redistest.SlowFloor)
		}
		prev = cur
	}
}

// sameExceptTotals compares two dumps, ignoring the meta's counters and
// the owners' liveness deadlines (a heartbeat may run in between).
func sameExceptTotals(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.HasSuffix(k, ":meta") || strings.HasSuffix(k, ":owners") {
			continue
		}
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRateQuotaPrecedenceAndChanges: each kind resolves on its own; a
// change made by one process is in force for another at once, raising a
// rate admits waiters, clearing falls back to the next scope.
func TestRateQuotaPrecedenceAndChanges(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "prec.act"
		admin := e.coordinator(e.opts())
		c := e.coordinator(e.opts())
		holdN(t, c, a, 1)[0].Release(ctx) // the action exists in Redis
		must(t, admin.SetConcurrencyLimit(ctx, limits.Action(a), 10))
		must(t, admin.SetRateLimit(ctx, limits.Global(), limits.Rate{Limit: 1, Per: time.Hour, Burst: 1}))
		must(t, admin.SetQuota(ctx, limits.Pack("prec"), limits.Quota{Limit: 100, Window: limits.Day}))
		st := e.stats(c, a)
		if st.LimitSource != "action:"+a || st.RateSource != "global" || st.QuotaSource != "pack:prec" {
			t.Fatalf("sources: limit %q rate %q quota %q", st.LimitSource, st.RateSource, st.QuotaSource)
		}
		// In force for the other process at once: one token an hour.
		holdN(t, c, a, 1)
		var dones []chan error
		for i := 0; i < 3; i++ {
			dones = append(dones, enqueueAsync(t, e, c, ctx, a, fmt.Sprint("waiter-", i)))
		}
		if st := e.stats(c, a); st.QueueLength != 3 || st.ThrottledUntil.IsZero() {
			t.Fatalf("throttled by the global rate: %+v", st)
		}
		// An action-scope rate wins over the global one, and raising admits at once.
		must(t, admin.SetRateLimit(ctx, limits.Action(a), limits.Rate{Limit: 1000, Per: time.Second, Burst: 10}))
		for i, ch := range dones {
			if err := recv(t, ch, fmt.Sprint("waiter-", i)); err != nil {
				t.Fatal(err)
			}
		}
		if st := e.stats(c, a); st.RateSource != "action:"+a || st.Rate.Limit != 1000 {
			t.Fatalf("action rate: %v from %q", st.Rate, st.RateSource)
		}
		// Clearing falls back: the global rate again (its debt carried over
		// and rescaled, so the next one waits), then none.
		must(t, admin.ClearRateLimit(ctx, limits.Action(a)))
		if st := e.stats(c, a); st.RateSource != "global" {
			t.Fatalf("after clearing the action rate: from %q", st.RateSource)
		}
		must(t, admin.ClearRateLimit(ctx, limits.Global()))
		must(t, admin.ClearQuota(ctx, limits.Pack("prec")))
		st = e.stats(c, a)
		if st.RateSource != "default" || !st.Rate.IsZero() || st.QuotaSource != "default" || !st.Quota.IsZero() || st.QuotaUsed != 0 {
			t.Fatalf("after clearing: %+v", st)
		}
		holdN(t, c, a, 5) // unthrottled again

		// Another process's cache follows within its PolicyRefresh (500 ms):
		// an action that Redis has never seen reports the caller's policy.
		must(t, admin.SetRateLimit(ctx, limits.Pack("prec"), limits.Rate{Limit: 7, Per: time.Second}))
		must(t, admin.SetQuota(ctx, limits.Global(), limits.Quota{Limit: 9, Window: limits.Hour}))
		eventually(t, time.Second, "the other process sees the new rate and quota", func() bool {
			st := e.stats(c, "prec.fresh")
			return st.RateSource == "pack:prec" && st.Rate.Limit == 7 && st.QuotaSource == "global" && st.Quota.Limit == 9
		})
	})
}

// TestRateQuotaBadInput: bad rates and quotas are refused with
// ErrInvalidArgument naming the field, and nothing is written.
func TestRateQuotaBadInput(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		holdN(t, c, "bad.act", 1)
		before := e.settledDump(t)
		s := limits.Action("bad.act")
		for _, tc := range []struct {
			err   error
			field string
		}{
			{c.SetRateLimit(ctx, s, limits.Rate{Limit: -1, Per: time.Second}), "rate limit"},
			{c.SetRateLimit(ctx, s, limits.Rate{Limit: 1, Per: 0}), "rate per"},
			{c.SetRateLimit(ctx, s, limits.Rate{Limit: 1, Per: -time.Second}), "rate per"},
			{c.SetRateLimit(ctx, s, limits.Rate{Limit: 1, Per: time.Second, Burst: -1}), "rate burst"},
			{c.SetQuota(ctx, s, limits.Quota{Limit: -1, Window: limits.Day}), "quota limit"},
			{c.SetQuota(ctx, s, limits.Quota{Limit: 1}), "quota window"},
			{c.SetQuota(ctx, s, limits.Quota{Limit: 1, Window: 7}), "quota window"},
			{c.SetRateLimit(ctx, limits.Scope{}, limits.Rate{Limit: 1, Per: time.Second}), "scope"},
			{c.ClearQuota(ctx, limits.Pack("a.b")), "pack name"},
		} {
			if !errors.Is(tc.err, coordinator.ErrInvalidArgument) || !strings.Contains(tc.err.Error(), tc.field) {
				t.Errorf("%v: want ErrInvalidArgument naming %q", tc.err, tc.field)
			}
		}
		if after := e.dump(); !sameExceptTotals(before, after) {
			t.Fatalf("bad input changed Redis")
		}
	})
}

// TestThrottledHeadSweeperBackstop: when the process told to admit a
// throttled head at its token's time stops first, a sweeper admits it.
func TestThrottledHeadSweeperBackstop(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "rate.backstop"
		releaser := e.coordinator(e.opts())
		waiter := e.coordinator(e.opts())
		o := e.opts()
		o.SweepInterval = 20 * time.Millisecond
		e.coordinator(o) // the sweeper
		must(t, releaser.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		must(t, releaser.SetRateLimit(ctx, limits.Action(a), limits.Rate{Limit: 1, Per: time.Second, Burst: 1}))
		held := holdN(t, releaser, a, 1)[0]
		done := enqueueAsync(t, e, waiter, ctx, a, "head") // waits for the slot, not yet for a token
		must(t, held.Release(ctx))                         // the slot is free, the token is not: the releaser is told
		st := e.stats(waiter, a)
		if st.QueueLength != 1 || st.ThrottledUntil.IsZero() {
			t.Fatalf("head not throttled after the release: %+v", st)
		}
		releaser.Close() // its timer goes with it
		if e.mr != nil {
			e.advance(st.ThrottledUntil.Sub(e.clock) + time.Millisecond)
		}
		if err := recv(t, done, "head"); err != nil {
			t.Fatal(err)
		}
		if got := sinceMs(t, waiter, a, "head"); got < st.ThrottledUntil.UnixMilli() {
			t.Fatalf("head admitted at %d, before its token at %d", got, st.ThrottledUntil.UnixMilli())
		}
	})
}

// TestForgetKeepsRateAndQuota: forgetting an idle action keeps its rate,
// its throttle's state and its quota count, so it frees no burst and
// resets no window.
func TestForgetKeepsRateAndQuota(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "rate.forget"
		c := e.coordinator(e.opts())
		e.quotaWindowRoom(t, limits.Day, time.Minute)
		must(t, c.SetRateLimit(ctx, limits.Action(a), limits.Rate{Limit: 1, Per: time.Hour, Burst: 1}))
		must(t, c.SetQuota(ctx, limits.Action(a), limits.Quota{Limit: 2, Window: limits.Day}))
		must(t, holdN(t, c, a, 1)[0].Release(ctx))
		must(t, c.ForgetAction(ctx, a))
		cctx, cancel := context.WithCancel(ctx)
		done := enqueueAsync(t, e, c, cctx, a, "after-forget")
		st := e.stats(c, a)
		if st.QueueLength != 1 || st.ThrottledUntil.IsZero() || st.RateSource != "action:"+a || st.QuotaUsed != 2 {
			t.Fatalf("after forget: %+v, want the next one throttled and the quota count kept", st)
		}
		if _, err := c.EnqueueAndWait(ctx, a, "third"); !errors.Is(err, coordinator.ErrQuotaExceeded) {
			t.Fatalf("third of a quota of 2: %v", err)
		}
		cancel()
		if err := recv(t, done, "after-forget"); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	})
}

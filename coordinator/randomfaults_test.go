package coordinator_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// TestRandomFaults drives several Coordinators through enqueue, release,
// cancel (by context and by CancelExecution), queue timeouts, re-attach and
// limit changes, with a seed it prints (BATON_FAULT_SEED reruns one), and
// on the real redis-server injects faults at random moments: CLIENT KILL
// TYPE normal, SCRIPT FLUSH, FUNCTION FLUSH, and in the "redis-pause" run paused processes
// for less than LeaseTTL: every connection of one in-process Coordinator
// frozen (pauser), and a Coordinator in a child process stopped with SIGSTOP
// (randomchild_test.go; it reports its leases to this bookkeeping). It
// checks with its own bookkeeping:
//   - never more holders than the limit in force (the larger of the old and
//     the new limit while a change spreads);
//   - fencing tokens unique, and each grant's above every token seen before
//     its request started;
//   - every call ends, within its bounds, with a lease or a documented error;
//     no live request (not canceled, timed out or re-attached by the test)
//     ends with ErrCanceled, nor, without the pause fault, with ErrLeaseLost;
//     no lease of a live request is lost without the pause fault;
//   - afterwards nothing waits or runs, no per-action list is left but grant
//     and wake keys with a TTL, and QueueStats totals reconcile.
//
// The seed fixes the test's random choices (operations, IDs, contexts,
// options, fault kinds and gaps), not the interleaving of goroutines: a
// race it finds may take a few runs with the same seed to show again; the
// failure message traces the execution IDs involved.
//
// BATON_FAULT_REATTACH=0 turns re-attaching off (to look past a known
// re-attach bug).
func TestRandomFaults(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("BATON_FAULT_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("BATON_FAULT_SEED=%q: not an integer", s)
		}
		seed = n
	}
	t.Logf("seed %d (rerun with BATON_FAULT_SEED=%d)", seed, seed)
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t) // the real clock: leases and timeouts pass by themselves
		e := &env{t: t, tier: "miniredis", addr: mr.Addr(), prefix: "baton"}
		e.rdb = e.client()
		runRandomFaults(t, e, seed, rfFaults{})
	})
	// Not on the cluster tier: the faults are one node's admin commands
	// (CLIENT KILL, SCRIPT FLUSH, FUNCTION FLUSH, CLIENT PAUSE), which a
	// cluster client sends to a node of its choosing. The cluster's own
	// faults (a master SIGKILLed and failed over) are failover_test.go's.
	t.Run("redis", func(t *testing.T) {
		runRandomFaults(t, newRealEnv(t), seed, rfFaults{kill: true, flush: true})
	})
	t.Run("redis-pause", func(t *testing.T) {
		runRandomFaults(t, newRealEnv(t), seed, rfFaults{kill: true, flush: true, pause: true})
	})
}

type rfFaults struct{ kill, flush, pause bool }

const (
	rfLoad     = 10 * time.Second // load, then drain
	rfWorkers  = 14
	rfMaxCalls = 300 // per worker
	rfCoords   = 4
	// A process keeps its leases only while a heartbeat (every LeaseTTL/3)
	// reaches Redis within LeaseTTL; a process starved of CPU for longer
	// than LeaseTTL minus a heartbeat loses them, as it must. 5 s leaves a
	// starved machine (.ci/starve) over 3 s of room: with 3 s, a live
	// process under starvation once lost a lease in a kill/flush run.
	rfLeaseTTL  = 5 * time.Second
	rfAck       = time.Second
	rfSweep     = 100 * time.Millisecond
	rfCallSlack = 15 * time.Second // beyond a call's own bound before it counts as hung
)

var rfActions = []string{"rf.a", "rf.b", "rf.c"}

// rfSpan is a limit that may have been in force from from until until
// (zero: still).
type rfSpan struct {
	limit       int
	from, until time.Time
}

// rfID is what the test did to one execution ID.
type rfID struct {
	firstStart time.Time
	shared     bool // more than one call used it (re-attach)
	canceled   bool // CancelExecution was called for it
}

type rfCall struct {
	n      int64
	action string
	id     string
	coord  int
	start  time.Time
	bound  time.Duration
}

type rfHarness struct {
	t      *testing.T
	e      *env
	seed   int64
	faults rfFaults
	cs     []*coordinator.Coordinator
	qt     []time.Duration // each Coordinator's QueueTimeout
	pz     *pauser
	child  *rfChild // SIGSTOPped at random (redis-pause)

	calls atomic.Int64

	mu         sync.Mutex
	spans      map[string][]rfSpan
	current    map[string]int
	holders    map[string]map[int64]string // action -> fence -> id: slots the test holds
	released   map[string]map[int64]int    // action -> fence -> releases that returned nil
	fenceOf    map[string]map[int64]string // action -> fence -> the id it was granted to
	maxFence   map[string]int64
	seqFence   map[string][][2]int64 // fresh grants: (seq, fence)
	ids        map[string]*rfID      // action/id
	inflight   map[int64]*rfCall
	trace      map[string][]string // action/id -> what happened to it
	outcomes   map[string]int
	notes      map[string]int
	violations []string
}

func (h *rfHarness) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.violations = append(h.violations, time.Now().Format("15:04:05.000 ")+msg)
	h.mu.Unlock()
}

// traceLocked notes one event of an execution ID, for failure messages.
func (h *rfHarness) traceLocked(key, format string, args ...any) {
	h.trace[key] = append(h.trace[key], time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

func (h *rfHarness) tr(key, format string, args ...any) {
	h.mu.Lock()
	h.traceLocked(key, format, args...)
	h.mu.Unlock()
}

// traces renders the traces of the execution IDs named in s (keys dumps).
func (h *rfHarness) traces(s string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	keys := make([]string, 0, len(h.trace))
	for k := range h.trace {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		_, id, _ := strings.Cut(k, "/")
		if strings.Contains(s, id+":") || strings.Contains(s, id+" ") || strings.Contains(s, id+"]") {
			fmt.Fprintf(&b, "\n  trace of %s:\n    %s", k, strings.Join(h.trace[k], "\n    "))
		}
	}
	return b.String()
}

func (h *rfHarness) count(m map[string]int, k string) {
	h.mu.Lock()
	m[k]++
	h.mu.Unlock()
}

// maxLimitLocked is the largest limit that may have been in force at any
// moment of [from, to].
func (h *rfHarness) maxLimitLocked(action string, from, to time.Time) int {
	m := 0
	for _, s := range h.spans[action] {
		if s.from.After(to) || (!s.until.IsZero() && s.until.Before(from)) {
			continue
		}
		m = max(m, s.limit)
	}
	return m
}

func runRandomFaults(t *testing.T, e *env, seed int64, faults rfFaults) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0xba70))
	h := &rfHarness{
		t: t, e: e, seed: seed, faults: faults,
		spans: map[string][]rfSpan{}, current: map[string]int{},
		holders: map[string]map[int64]string{}, released: map[string]map[int64]int{},
		fenceOf: map[string]map[int64]string{}, maxFence: map[string]int64{}, seqFence: map[string][][2]int64{},
		ids: map[string]*rfID{}, inflight: map[int64]*rfCall{}, trace: map[string][]string{}, outcomes: map[string]int{}, notes: map[string]int{},
	}
	log := newTestLog(t, "")
	for i := 0; i < rfCoords; i++ {
		qt := time.Duration(200+rng.IntN(4801)) * time.Millisecond
		o := coordinator.Options{
			Prefix: e.prefix, LeaseTTL: rfLeaseTTL, AckTimeout: rfAck, SweepInterval: rfSweep,
			QueueTimeout: qt, Logger: log.logger(),
		}
		if i == 0 {
			o.MaxQueueLength = 5 // some calls meet ErrQueueFull
		}
		ropts := &redis.Options{Addr: e.addr, PoolSize: 64}
		if faults.pause && i == rfCoords-1 {
			h.pz = &pauser{}
			ropts.Dialer = h.pz.dial
		}
		rdb := redis.NewClient(ropts)
		t.Cleanup(func() { rdb.Close() })
		c, err := coordinator.New(rdb, o)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		h.cs = append(h.cs, c)
		h.qt = append(h.qt, qt)
	}
	owners := make([]string, len(h.cs))
	for i, c := range h.cs {
		owners[i] = c.Owner()
	}
	t.Logf("%s: owners %v (the last one pauses in redis-pause), QueueTimeouts %v; faults %+v", e.tier, owners, h.qt, faults)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, a := range rfActions {
		n := i + 1
		must(t, h.cs[0].SetConcurrencyLimit(ctx, limits.Action(a), n))
		h.spans[a] = []rfSpan{{limit: n}}
		h.current[a] = n
		h.holders[a], h.released[a], h.fenceOf[a] = map[int64]string{}, map[int64]int{}, map[int64]string{}
	}
	// The spans above hold from the start: every Coordinator must have
	// every limit before its first admission (the child reads them itself).
	readPolicies(t, h.cs...)

	if faults.pause {
		h.child = h.startRFChild(t, time.Duration(200+rng.IntN(4801))*time.Millisecond)
		t.Logf("%s: child process %d, owner %s (SIGSTOP)", e.tier, h.child.cmd.Process.Pid, h.child.owner)
	}

	loadEnd := time.Now().Add(rfLoad)
	var workers, helpers sync.WaitGroup
	for w := 0; w < rfWorkers; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r := rand.New(rand.NewPCG(uint64(seed), uint64(w+1)))
			for i := 0; i < rfMaxCalls && time.Now().Before(loadEnd); i++ {
				h.oneCall(ctx, r, w, i)
			}
		}()
	}
	helpers.Add(3)
	go func() { defer helpers.Done(); h.policyChanger(ctx, rand.New(rand.NewPCG(uint64(seed), 1001)), loadEnd) }()
	go func() { defer helpers.Done(); h.canceler(ctx, rand.New(rand.NewPCG(uint64(seed), 1002)), loadEnd) }()
	go func() { defer helpers.Done(); h.injector(ctx, rand.New(rand.NewPCG(uint64(seed), 1003)), loadEnd) }()

	drained := make(chan struct{})
	go func() {
		workers.Wait()
		helpers.Wait()
		if h.child != nil {
			h.child.send("stop")
			<-h.child.closed
		}
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(rfLoad + 90*time.Second):
		h.mu.Lock()
		var stuck []string
		for _, c := range h.inflight {
			stuck = append(stuck, fmt.Sprintf("%s/%s on coordinator %d for %s", c.action, c.id, c.coord, time.Since(c.start).Round(time.Millisecond)))
		}
		h.mu.Unlock()
		childDone := "no child"
		if h.child != nil {
			select {
			case <-h.child.closed:
				childDone = "the child closed"
			default:
				childDone = "the child never closed"
			}
		}
		t.Fatalf("seed %d: calls never returned: %v (%s)", seed, stuck, childDone)
	}
	t.Logf("%s: %d calls; outcomes %v; notes %v", e.tier, h.calls.Load(), h.outcomes, h.notes)

	// Everything was released: what the core gives back by itself (orphan
	// grants, abandoned leases, retried give-ups) must be gone within a
	// lease, an ack timeout and a few sweeps.
	idle := func() (bool, string) {
		for _, a := range rfActions {
			st, err := h.cs[0].QueueStats(ctx, a)
			if err != nil || st.QueueLength != 0 || st.ActiveCount != 0 {
				return false, fmt.Sprintf("%s: %+v %v", a, st, err)
			}
		}
		return true, ""
	}
	deadline := time.Now().Add(rfLeaseTTL + rfAck + 20*time.Second)
	for {
		ok, why := idle()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			dump := h.dumpKeys(ctx)
			h.violate("leak: 20s after the load, still waiting or running: %s; keys: %s%s\n  (a waiter in Redis whose "+
				"process ended its call with \"re-attached by another process\" while owning it? see TestStaleSupersedeToken)",
				why, dump, h.traces(dump))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range h.cs {
		c.Close()
	}
	h.checkAfter(ctx)
	h.logFIFO()

	if len(h.violations) > 0 {
		n := len(h.violations)
		shown := h.violations[:min(n, 30)]
		t.Fatalf("seed %d (rerun with BATON_FAULT_SEED=%d), %s tier, faults %+v: %d violations:\n%s",
			seed, seed, e.tier, faults, n, strings.Join(shown, "\n"))
	}
}

// oneCall is one EnqueueAndWait, and if it gets a lease, a short hold and
// the release.
func (h *rfHarness) oneCall(ctx context.Context, r *rand.Rand, w, i int) {
	act := rfActions[r.IntN(len(rfActions))]
	ci := r.IntN(len(h.cs))
	id := ""
	reattach := false
	h.mu.Lock()
	if r.IntN(100) < 15 && len(h.inflight) > 0 && os.Getenv("BATON_FAULT_REATTACH") != "0" {
		keys := make([]int64, 0, len(h.inflight))
		for k := range h.inflight {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		c := h.inflight[keys[r.IntN(len(keys))]]
		act, id, reattach = c.action, c.id, true
		if r.IntN(2) == 0 {
			ci = c.coord // the same process re-attaches
		}
	}
	if id == "" {
		id = fmt.Sprintf("w%d-%d", w, i)
	}
	now := time.Now()
	info := h.ids[act+"/"+id]
	if info == nil {
		info = &rfID{firstStart: now}
		h.ids[act+"/"+id] = info
	}
	if reattach {
		info.shared = true
	}
	floor := h.maxFence[act]
	windowFrom := info.firstStart

	// The call's own bound: its context, or its Coordinator's QueueTimeout.
	bound := h.qt[ci]
	var cctx context.Context
	var cancel context.CancelFunc
	kind := "none"
	switch p := r.IntN(100); {
	case p < 40:
		d := time.Duration(200+r.IntN(4801)) * time.Millisecond
		cctx, cancel = context.WithTimeout(ctx, d)
		kind = "deadline"
		bound = min(bound, d)
	case p < 60:
		d := time.Duration(50+r.IntN(2951)) * time.Millisecond
		cctx, cancel = context.WithCancel(ctx)
		time.AfterFunc(d, cancel)
		kind = "cancel"
		bound = min(bound, d)
	default:
		cctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	n := h.calls.Add(1)
	call := &rfCall{n: n, action: act, id: id, coord: ci, start: now, bound: bound}
	h.inflight[n] = call
	h.traceLocked(act+"/"+id, "call %d on coordinator %d (%s): context %s, bound %s, re-attach %v", n, ci, h.cs[ci].Owner(), kind, bound, reattach)
	h.mu.Unlock()

	l, err := h.cs[ci].EnqueueAndWait(cctx, act, id)
	took := time.Since(now)
	ctxDone := cctx.Err() != nil

	h.mu.Lock()
	delete(h.inflight, n)
	shared, canceled := info.shared, info.canceled
	h.mu.Unlock()
	live := !shared && !canceled && !ctxDone
	if l != nil {
		h.tr(act+"/"+id, "call %d: lease token %d seq %d after %s", n, l.Token(), l.Seq(), took.Round(time.Millisecond))
	} else {
		h.tr(act+"/"+id, "call %d: %v after %s (context done: %v)", n, err, took.Round(time.Millisecond), ctxDone)
	}
	what := fmt.Sprintf("%s/%s (coordinator %d, context %s, re-attach %v, shared %v, canceled %v)", act, id, ci, kind, reattach, shared, canceled)
	if took > bound+rfCallSlack {
		h.violate("%s: the call took %s, its bound is %s", what, took.Round(time.Millisecond), bound)
	}

	switch {
	case err == nil:
		if l == nil || l.Token() <= 0 {
			h.violate("%s: no error and no valid lease (%v)", what, l)
			return
		}
		h.count(h.outcomes, "lease")
		h.hold(ctx, r, what, act, id, l, reattach, floor, windowFrom)
		return
	case errors.Is(err, coordinator.ErrQueueFull):
		h.count(h.outcomes, "queue full")
	case errors.Is(err, coordinator.ErrQueueTimeout):
		h.count(h.outcomes, "queue timeout")
	case errors.Is(err, coordinator.ErrCanceled):
		h.count(h.outcomes, "canceled")
		if live {
			h.violate("%s: live request ended with %v", what, err)
		}
	case errors.Is(err, coordinator.ErrLeaseLost):
		h.count(h.outcomes, "lease lost")
		if live && !h.faults.pause {
			h.violate("%s: live request ended with %v (faults: kill/flush only)", what, err)
		} else if live {
			h.count(h.notes, "live request lease lost under pause")
			h.t.Logf("%s: live request ended with %v (pause fault on)", what, err)
		}
	case errors.Is(err, coordinator.ErrClosed):
		h.violate("%s: ErrClosed while no Coordinator was closing: %v", what, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		h.count(h.outcomes, "context")
		if !ctxDone {
			h.violate("%s: context error %v but the context is not done (a re-attach that joined a waiter giving up "+
				"for another caller? see TestReattachWhileGivingUp)", what, err)
		}
	default:
		h.violate("%s: undocumented error: %v", what, err)
	}
	if l != nil {
		h.violate("%s: a lease (token %d) and an error %v", what, l.Token(), err)
	}
}

// hold records a lease, holds it briefly and releases it.
func (h *rfHarness) hold(ctx context.Context, r *rand.Rand, what, act, id string, l *coordinator.Lease, reattach bool, floor int64, windowFrom time.Time) {
	fence := l.Token()
	h.mu.Lock()
	if !reattach {
		if fence <= floor {
			h.violations = append(h.violations, fmt.Sprintf("%s: token %d not above %d, a token seen before the request started", what, fence, floor))
		}
		h.seqFence[act] = append(h.seqFence[act], [2]int64{l.Seq(), fence})
	}
	h.recordLeaseLocked(what, act, id, fence, windowFrom)
	h.mu.Unlock()

	holdFor := time.Duration(r.IntN(300)) * time.Millisecond
	if r.IntN(100) < 5 { // past LeaseTTL: heartbeats must renew it through the faults
		holdFor = rfLeaseTTL + time.Duration(r.IntN(1500))*time.Millisecond
	}
	t := time.NewTimer(holdFor)
	select {
	case <-t.C:
	case <-l.Lost():
		t.Stop()
	}
	lost := false
	select {
	case <-l.Lost():
		lost = true
	default:
	}

	h.mu.Lock()
	if _, done := h.released[act][fence]; !done {
		h.released[act][fence] = 0
		delete(h.holders[act], fence)
	}
	info := h.ids[act+"/"+id]
	shared := info.shared
	h.mu.Unlock()
	if lost {
		h.count(h.notes, "lease Lost() closed")
		if !shared && !h.faults.pause {
			h.violate("%s: the lease (token %d) of a live request was lost (faults: kill/flush only)", what, fence)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := l.Release(rctx)
	h.tr(act+"/"+id, "release of token %d (lost before: %v): %v", fence, lost, err)
	switch {
	case err == nil:
		h.mu.Lock()
		h.released[act][fence]++
		if h.released[act][fence] > 1 {
			h.violations = append(h.violations, fmt.Sprintf("%s: token %d released twice with success", what, fence))
		}
		h.mu.Unlock()
	case errors.Is(err, coordinator.ErrLeaseLost):
		if shared || lost {
			h.count(h.notes, "release: lease lost (shared or lost)")
		} else {
			// A release whose reply a killed connection lost is retried
			// and finds the slot free: not a lost lease.
			h.count(h.notes, "release: lease lost (live)")
		}
	default:
		h.violate("%s: release of token %d: undocumented error: %v", what, fence, err)
	}
}

// recordLeaseLocked counts a slot the test now holds (once per token) and
// checks it against the limit that may have been in force since the
// request started (windowFrom).
func (h *rfHarness) recordLeaseLocked(what, act, id string, fence int64, windowFrom time.Time) {
	if prev, ok := h.fenceOf[act][fence]; ok && prev != id {
		h.violations = append(h.violations, fmt.Sprintf("%s: token %d granted to %s and to %s", what, fence, prev, id))
	}
	h.fenceOf[act][fence] = id
	h.maxFence[act] = max(h.maxFence[act], fence)
	if _, done := h.released[act][fence]; done {
		return
	}
	if _, held := h.holders[act][fence]; held {
		return
	}
	h.holders[act][fence] = id
	now := time.Now()
	if n, lim := len(h.holders[act]), h.maxLimitLocked(act, windowFrom, now); n > lim {
		h.violations = append(h.violations, fmt.Sprintf("%s %s: %d holders %v, limit in force at most %d (spans %+v)",
			now.Format("15:04:05.000"), act, n, h.holders[act], lim, h.spans[act]))
	}
}

// policyChanger raises and lowers the actions' limits (1 to 3).
func (h *rfHarness) policyChanger(ctx context.Context, r *rand.Rand, until time.Time) {
	for time.Now().Before(until) {
		time.Sleep(time.Duration(300+r.IntN(700)) * time.Millisecond)
		act := rfActions[r.IntN(len(rfActions))]
		h.mu.Lock()
		old := h.current[act]
		h.mu.Unlock()
		n := 1 + r.IntN(3)
		if n == old {
			continue
		}
		start := time.Now()
		h.mu.Lock()
		h.spans[act] = append(h.spans[act], rfSpan{limit: n, from: start})
		h.current[act] = n
		h.mu.Unlock()
		var err error
		for try := 0; try < 20; try++ {
			if err = h.cs[r.IntN(len(h.cs))].SetConcurrencyLimit(ctx, limits.Action(act), n); err == nil {
				break
			}
			h.count(h.notes, "policy change retried")
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			h.violate("%s: limit %d -> %d failed 20 times: %v", act, old, n, err)
			continue // the old span stays open: the check stays conservative
		}
		// The old limit may stay in force until every process has the new
		// version (PolicyRefresh), with room to spare.
		end := time.Now().Add(2 * time.Second)
		h.mu.Lock()
		h.spans[act][len(h.spans[act])-2].until = end
		h.mu.Unlock()
		h.count(h.notes, "limit changes")
	}
}

// canceler cancels random waiting executions from outside.
func (h *rfHarness) canceler(ctx context.Context, r *rand.Rand, until time.Time) {
	for time.Now().Before(until) {
		time.Sleep(time.Duration(100+r.IntN(300)) * time.Millisecond)
		h.mu.Lock()
		keys := make([]int64, 0, len(h.inflight))
		for k := range h.inflight {
			keys = append(keys, k)
		}
		if len(keys) == 0 {
			h.mu.Unlock()
			continue
		}
		slices.Sort(keys)
		c := h.inflight[keys[r.IntN(len(keys))]]
		h.ids[c.action+"/"+c.id].canceled = true
		ci := r.IntN(len(h.cs))
		h.traceLocked(c.action+"/"+c.id, "CancelExecution from coordinator %d", ci)
		h.mu.Unlock()
		removed, err := h.cs[ci].CancelExecution(ctx, c.action, c.id)
		h.tr(c.action+"/"+c.id, "CancelExecution: removed %v, error %v", removed, err)
		switch {
		case err != nil: // not a request: an operator would retry
			h.count(h.notes, "CancelExecution failed")
			h.t.Logf("CancelExecution %s/%s: %v", c.action, c.id, err)
		case removed:
			h.count(h.notes, "CancelExecution removed")
		default:
			h.count(h.notes, "CancelExecution found nothing")
		}
	}
}

// injector injects the tier's faults at random moments.
func (h *rfHarness) injector(ctx context.Context, r *rand.Rand, until time.Time) {
	f := h.faults
	if !f.kill && !f.flush && !f.pause {
		return
	}
	for time.Now().Before(until) {
		time.Sleep(time.Duration(100+r.IntN(500)) * time.Millisecond)
		// Half of the faults pause a process in redis-pause; the rest
		// drop connections or flush scripts.
		choice := "flush"
		switch p := r.IntN(100); {
		case f.pause && p < 25:
			choice = "pause"
		case f.pause && p < 50:
			choice = "sigstop"
		case f.kill && (p < 55 || (f.pause && p < 78) || !f.flush):
			choice = "kill"
		}
		switch {
		case choice == "kill":
			n, err := h.e.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "normal").Int64()
			if err != nil {
				h.violate("injecting CLIENT KILL: %v", err)
			}
			h.mu.Lock()
			h.notes["fault: client kill"]++
			h.notes["fault: connections killed"] += int(n)
			h.mu.Unlock()
		case choice == "flush" && f.flush && r.IntN(2) == 0:
			if err := h.e.rdb.ScriptFlush(ctx).Err(); err != nil {
				h.violate("injecting SCRIPT FLUSH: %v", err)
			}
			h.count(h.notes, "fault: script flush")
		case choice == "flush" && f.flush:
			// The operations run as a Function library where Redis has
			// Functions: losing it must cost nothing either.
			if err := h.e.rdb.FunctionFlush(ctx).Err(); err != nil {
				h.violate("injecting FUNCTION FLUSH: %v", err)
			}
			h.count(h.notes, "fault: function flush")
		case choice == "pause":
			d := time.Duration(200+r.IntN(800)) * time.Millisecond
			h.pz.pause(d)
			h.count(h.notes, "fault: pause")
		case choice == "sigstop":
			// SIGSTOP the child for less than LeaseTTL minus a heartbeat
			// interval, so that its leases and liveness survive.
			d := time.Duration(200+r.IntN(800)) * time.Millisecond
			if err := h.child.signal(syscall.SIGSTOP); err != nil {
				h.violate("SIGSTOP: %v", err)
			}
			time.Sleep(d)
			if err := h.child.signal(syscall.SIGCONT); err != nil {
				h.violate("SIGCONT: %v", err)
			}
			h.count(h.notes, "fault: SIGSTOP")
		}
	}
}

// checkAfter checks Redis once everything was released and every
// Coordinator closed.
func (h *rfHarness) checkAfter(ctx context.Context) {
	e := h.e
	ks, err := e.rdb.Keys(ctx, e.prefix+":*").Result()
	if err != nil {
		h.violate("listing keys: %v", err)
		return
	}
	for _, k := range ks {
		switch {
		case strings.Contains(k, "}:grant:") || strings.Contains(k, "}:wake:"):
			ttl, err := e.rdb.PTTL(ctx, k).Result()
			if err == nil && ttl == -1 {
				h.violate("key %s left without a TTL", k)
			}
		case strings.HasSuffix(k, "}:queue") || strings.HasSuffix(k, "}:waiting") ||
			strings.HasSuffix(k, "}:running") || strings.HasSuffix(k, "}:holders"):
			dump := h.dumpKey(ctx, k)
			h.violate("key %s left behind: %s%s", k, dump, h.traces(dump))
		}
	}
	o := coordinator.Options{Prefix: e.prefix, LeaseTTL: rfLeaseTTL, AckTimeout: rfAck, SweepInterval: -1}
	rdb := redis.NewClient(&redis.Options{Addr: e.addr})
	defer rdb.Close()
	c, err := coordinator.New(rdb, o)
	if err != nil {
		h.violate("a Coordinator to read stats: %v", err)
		return
	}
	defer c.Close()
	for _, a := range rfActions {
		st, err := c.QueueStats(ctx, a)
		if err != nil {
			h.violate("stats %s: %v", a, err)
			continue
		}
		h.t.Logf("%s: %+v", a, st)
		if st.QueueLength != 0 || st.ActiveCount != 0 {
			h.violate("%s: after close, %d waiting and %d running", a, st.QueueLength, st.ActiveCount)
		}
		if got := st.TotalAdmitted + st.TotalTimedOut + st.TotalCanceled + st.TotalAbandoned + st.QueueLength; st.TotalEnqueued != got {
			h.violate("%s: TotalEnqueued %d != admitted+timed out+canceled+abandoned+waiting %d: %+v", a, st.TotalEnqueued, got, st)
		}
		if got := st.TotalCompleted + st.TotalReclaimed + st.ActiveCount; st.TotalAdmitted != got {
			h.violate("%s: TotalAdmitted %d != completed+reclaimed+active %d: %+v", a, st.TotalAdmitted, got, st)
		}
	}
}

func (h *rfHarness) dumpKey(ctx context.Context, k string) string {
	rdb := h.e.rdb
	typ, _ := rdb.Type(ctx, k).Result()
	switch typ {
	case "list":
		v, _ := rdb.LRange(ctx, k, 0, 20).Result()
		return fmt.Sprint(v)
	case "hash":
		v, _ := rdb.HGetAll(ctx, k).Result()
		return fmt.Sprint(v)
	case "zset":
		v, _ := rdb.ZRangeWithScores(ctx, k, 0, 20).Result()
		return fmt.Sprint(v)
	}
	return typ
}

func (h *rfHarness) dumpKeys(ctx context.Context) string {
	var b strings.Builder
	for _, a := range rfActions {
		for _, suffix := range []string{"queue", "waiting", "running", "holders", "meta"} {
			k := fmt.Sprintf("%s:{%s}:%s", h.e.prefix, a, suffix)
			fmt.Fprintf(&b, "\n  %s = %s", k, h.dumpKey(ctx, k))
		}
	}
	return b.String()
}

// logFIFO logs how often fresh grants of an action came out of seq order
// (legitimate under faults: an unread grant of a slow process goes back to
// the head of the queue and is granted again with a later token).
func (h *rfHarness) logFIFO() {
	for _, a := range rfActions {
		sf := slices.Clone(h.seqFence[a])
		slices.SortFunc(sf, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
		inv := 0
		for i := 1; i < len(sf); i++ {
			if sf[i][1] < sf[i-1][1] {
				inv++
			}
		}
		h.t.Logf("%s: %d fresh grants, %d out of seq order", a, len(sf), inv)
	}
}

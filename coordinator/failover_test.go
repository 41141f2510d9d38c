package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// Failover tests: a master is SIGKILLed while a bench-like load runs (three
// Coordinators, each its own client and owner, as three processes would be;
// several actions on that master, more workers than slots, so that grants
// travel by BLPOP), and its replica is promoted. Each run reports, through
// t.Log, what the load saw; RELIABILITY.md collects the figures. Only the
// promises are asserted: every call ends (nothing hangs), within a bound;
// with WaitReplicas on, no moment over a limit and no acknowledged
// enqueue lost.

const (
	foLimit     = 3 // per action, but the sparse ones
	foWorkers   = 5 // per action and Coordinator
	foCoords    = 3
	foLeaseTTL  = 10 * time.Second
	foLongHold  = 5 * time.Second  // executions admitted just before the kill
	foCallBound = 90 * time.Second // the longest any call may take
)

// Sparse actions (named fo.sp*) have a limit of 1 and workers that pause
// between requests, so that their slot is often free: an admission lost
// in a failover then meets a free slot on the promoted master. (In a
// saturated action the lost writes are releases as well as admissions,
// and a lost release keeps its slot held until its lease expires.)
func isSparse(action string) bool { return strings.HasPrefix(action, "fo.sp") }

func limitOf(action string) int {
	if isSparse(action) {
		return 1
	}
	return foLimit
}

// setLimits sets pack fo's limit and the sparse actions' own. With
// WaitReplicas, a change the replica did not acknowledge within the short
// WaitTimeout (a loaded machine) ran on the master; it is made again until
// one is acknowledged.
func setLimits(t *testing.T, c *coordinator.Coordinator, actions []string) {
	ctx := ctxT(t)
	set := func(s limits.Scope, n int) {
		t.Helper()
		for try := 1; ; try++ {
			err := c.SetConcurrencyLimit(ctx, s, n)
			if err == nil {
				return
			}
			if !errors.Is(err, coordinator.ErrNotReplicated) || try == 50 {
				t.Fatalf("setting %s to %d (try %d): %v", s, n, try, err)
			}
			t.Logf("setting %s to %d (try %d): %v; again", s, n, try, err)
		}
	}
	set(limits.Pack("fo"), foLimit)
	for _, a := range actions {
		if isSparse(a) {
			set(limits.Action(a), 1)
		}
	}
}

// foFigures is what one failover run measured.
type foFigures struct {
	mu          sync.Mutex
	running     map[string]int // the test's own count of holders per action
	over        int            // admissions that took an action over its limit
	maxOver     int            // the most executions over a limit at one moment
	leases      map[string]int // leases returned per execution ID
	twice       int            // IDs that received a lease in two calls
	calls       int
	admitted    int
	lostWaits   int            // waits that ended with ErrLeaseLost
	lostRelease int            // releases that found no slot (ErrLeaseLost)
	lostRunning int            // executions whose Lost() closed while they ran
	errs        map[string]int // calls that ended with another error, by kind
	relErrs     map[string]int // releases that failed, by kind
	longest     time.Duration  // the longest call
	admits      map[string][]time.Time
}

func newFigures() *foFigures {
	return &foFigures{running: map[string]int{}, leases: map[string]int{}, errs: map[string]int{},
		relErrs: map[string]int{}, admits: map[string][]time.Time{}}
}

// errKind names an error for the figures, without random parts.
func errKind(err error) string {
	for _, e := range []error{coordinator.ErrNotReplicated, coordinator.ErrLeaseLost, coordinator.ErrQueueTimeout,
		coordinator.ErrQueueFull, coordinator.ErrClosed, context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	s := err.Error()
	for _, p := range []string{"connection refused", "connection reset", "EOF", "i/o timeout", "CLUSTERDOWN", "MOVED", "READONLY", "broken pipe", "LOADING", "MASTERDOWN"} {
		if strings.Contains(s, p) {
			return p
		}
	}
	return s
}

// gap is the longest time between two admissions of the given actions,
// from the kill on: how long admissions stopped.
func (f *foFigures) gap(actions []string, killed time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var worst time.Duration
	for _, a := range actions {
		ts := slices.Clone(f.admits[a])
		slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
		prev := time.Time{}
		for _, t := range ts {
			if !prev.IsZero() && !t.Before(killed) && t.Sub(prev) > worst {
				worst = t.Sub(prev)
			}
			prev = t
		}
	}
	return worst
}

// failoverLoad runs the load on actions until stop is closed, with
// Coordinators on clients from mk. A request (an execution ID) is retried
// with the same ID after an error, up to three calls, as a redelivering
// queue would.
type failoverLoad struct {
	t    *testing.T
	f    *foFigures
	stop chan struct{}
	wg   sync.WaitGroup
	seq  atomic.Int64
	// long: executions admitted from now on run foLongHold (or until their
	// lease is lost), longer than a failover, as most real ones do; before,
	// a few milliseconds, to keep the load high.
	long atomic.Bool
}

func startFailoverLoad(t *testing.T, cs []*coordinator.Coordinator, actions []string) *failoverLoad {
	l := &failoverLoad{t: t, f: newFigures(), stop: make(chan struct{})}
	for ci, c := range cs {
		for _, a := range actions {
			for w := 0; w < foWorkers; w++ {
				l.wg.Add(1)
				go func() {
					defer l.wg.Done()
					l.worker(c, ci, a)
				}()
			}
		}
	}
	return l
}

func (l *failoverLoad) worker(c *coordinator.Coordinator, ci int, action string) {
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		if isSparse(action) {
			select {
			case <-l.stop:
				return
			case <-time.After(time.Duration(rand.IntN(100)) * time.Millisecond):
			}
		}
		id := fmt.Sprintf("c%d-%d", ci, l.seq.Add(1))
		for try := 0; try < 3; try++ {
			if l.call(c, action, id) {
				break
			}
			select {
			case <-l.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// call makes one EnqueueAndWait, holds the slot briefly and releases it;
// false when the call ended with an error.
func (l *failoverLoad) call(c *coordinator.Coordinator, action, id string) bool {
	f := l.f
	ctx, cancel := context.WithTimeout(context.Background(), foCallBound)
	defer cancel()
	start := time.Now()
	lease, err := c.EnqueueAndWait(ctx, action, id)
	took := time.Since(start)
	f.mu.Lock()
	f.calls++
	f.longest = max(f.longest, took)
	if err != nil {
		if errors.Is(err, coordinator.ErrLeaseLost) {
			f.lostWaits++
		} else {
			f.errs[errKind(err)]++
		}
		f.mu.Unlock()
		return false
	}
	f.admitted++
	f.leases[id]++
	if f.leases[id] == 2 {
		f.twice++
	}
	f.admits[action] = append(f.admits[action], time.Now())
	f.running[action]++
	if n := f.running[action]; n > limitOf(action) {
		f.over++
		f.maxOver = max(f.maxOver, n-limitOf(action))
	}
	f.mu.Unlock()
	hold := time.Duration(2+rand.IntN(8)) * time.Millisecond
	if l.long.Load() {
		hold = foLongHold
	}
	select { // a well-behaved executor stops when its lease is lost
	case <-time.After(hold):
	case <-lease.Lost():
		f.mu.Lock()
		f.lostRunning++
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.running[action]--
	f.mu.Unlock()
	// A release that fails is retried, as an executor must: the lease is
	// still held (and renewed) until a release lands.
	for try := 0; ; try++ {
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := lease.Release(rctx)
		rcancel()
		if err == nil {
			return true
		}
		f.mu.Lock()
		switch {
		case errors.Is(err, coordinator.ErrLeaseLost):
			f.lostRelease++
		case errors.Is(err, coordinator.ErrNotReplicated):
			// Released on the master, not yet on a replica: nothing to retry.
			f.relErrs[errKind(err)]++
		case try < 20:
			f.relErrs[errKind(err)]++
			f.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		default:
			f.relErrs["gave up: "+errKind(err)]++
		}
		f.mu.Unlock()
		return true
	}
}

// admissions counts admissions of actions so far.
func (l *failoverLoad) admissions(actions []string) int {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	n := 0
	for _, a := range actions {
		n += len(l.f.admits[a])
	}
	return n
}

// finish stops the load and waits for every call to end, failing the test
// if one does not within foCallBound.
func (l *failoverLoad) finish() {
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(foCallBound + 30*time.Second):
		l.t.Fatalf("calls still running %v after the load stopped: a call hangs", foCallBound+30*time.Second)
	}
}

// report logs the figures and asserts the promises.
func (l *failoverLoad) report(name string, durable bool, victims []string, killed time.Time, failover time.Duration) {
	t, f := l.t, l.f
	f.mu.Lock()
	figures := fmt.Sprintf("%s: %d calls, %d admitted; over the limit: %d admissions (at most %d over at once); "+
		"waits lost (ErrLeaseLost): %d; releases that found no slot: %d; leases lost while running: %d; IDs admitted in two calls: %d; "+
		"calls ended with an error: %v; releases failed: %v; longest call %v; failover took %v",
		name, f.calls, f.admitted, f.over, f.maxOver, f.lostWaits, f.lostRelease, f.lostRunning, f.twice, f.errs, f.relErrs,
		f.longest.Round(time.Millisecond), failover.Round(time.Millisecond))
	f.mu.Unlock()
	t.Logf("%s; admissions on the killed master's actions stopped for %v", figures, f.gap(victims, killed).Round(time.Millisecond))
	if f.errs[context.DeadlineExceeded.Error()] > 0 || f.longest > foCallBound {
		t.Errorf("%s: a call ran into its %v bound", name, foCallBound)
	}
	if durable && (f.over > 0 || f.lostWaits > 0) {
		t.Errorf("%s: with WaitReplicas, %d admissions over the limit and %d lost waits; want 0 and 0", name, f.over, f.lostWaits)
	}
}

// foOpts are the Coordinators' options in failover runs.
func foOpts(prefix string, waitReplicas int, log *testLog) coordinator.Options {
	return coordinator.Options{Prefix: prefix, LeaseTTL: foLeaseTTL, AckTimeout: time.Second,
		QueueTimeout: time.Minute, SweepInterval: 200 * time.Millisecond, WaitReplicas: waitReplicas,
		WaitTimeout: 200 * time.Millisecond,
		// Errors only: a failover makes every Coordinator warn many times.
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: foLogLevel}))}
}

// waitForAdmissions waits until n more admissions of actions happened.
func waitForAdmissions(t *testing.T, l *failoverLoad, actions []string, n int, what string) {
	from := l.admissions(actions)
	eventually(t, 60*time.Second, what, func() bool { return l.admissions(actions) >= from+n })
}

// foRun is one failover run: with or without WaitReplicas, and with the
// replicas in step or lagging (their links cut and the replicas paused
// for foLag before the kill, so that the promoted one lacks the master's
// last writes, as after a slow link).
type foRun struct {
	waitReplicas int
	lagging      bool
}

func (r foRun) String() string {
	s := fmt.Sprintf("WaitReplicas=%d", r.waitReplicas)
	if r.lagging {
		s += ",lagging"
	}
	return s
}

var foRuns = []foRun{{0, false}, {1, false}, {0, true}, {1, true}}

// foLag is how long the master's writes reach no replica before the kill in
// lagging runs; below the failure-detection timeouts, so the paused replicas
// are not themselves taken for dead.
const foLag = 500 * time.Millisecond

// beforeKill switches the load to long executions and lets it run a moment
// (lagging: with the replicas cut off) before the kill.
func beforeKill(t *testing.T, l *failoverLoad, r foRun, stall func() error) {
	if r.lagging {
		must(t, stall())
	}
	l.long.Store(true)
	time.Sleep(foLag) // the fault's duration, not a wait for an event
}

// TestClusterFailoverUnderLoad SIGKILLs the master of three loaded actions
// of the shared cluster; its replica is promoted. Then the killed node is
// revived (it rejoins as a replica), so other tests find the cluster whole.
// With WaitReplicas 1 the promoted master, which has no replica until the
// old one rejoins, acknowledges no write (ErrNotReplicated) until then.
func TestClusterFailoverUnderLoad(t *testing.T) {
	for _, r := range foRuns {
		t.Run(r.String(), func(t *testing.T) {
			e := newClusterEnv(t)
			ctx := ctxT(t)
			victim, victims, others := clusterActions(t, e)
			all := append(slices.Clone(victims), others...)
			log := newTestLog(t, "")
			cs := make([]*coordinator.Coordinator, foCoords)
			for i := range cs {
				c, err := coordinator.New(e.client(), foOpts(e.prefix, r.waitReplicas, log))
				must(t, err)
				t.Cleanup(func() { c.Close() })
				cs[i] = c
			}
			setLimits(t, cs[0], all)
			readPolicies(t, cs...)
			l := startFailoverLoad(t, cs, all)
			waitForAdmissions(t, l, victims, 200, "admissions before the kill")
			beforeKill(t, l, r, func() error { return e.cluster.StallReplica(ctx, victim) })
			killed := time.Now()
			promoted, err := e.cluster.KillMaster(ctx, victim)
			must(t, err)
			failover := time.Since(killed)
			t.Logf("killed master %s; %s promoted after %v", victim, promoted, failover.Round(time.Millisecond))
			l.long.Store(false)
			if r.waitReplicas == 0 {
				waitForAdmissions(t, l, victims, 50, "admissions after the failover")
			}
			must(t, e.cluster.Revive(ctx, victim))
			t.Logf("%s rejoined as a replica %v after the kill", victim, time.Since(killed).Round(time.Millisecond))
			waitForAdmissions(t, l, victims, 50, "admissions after the revival")
			l.finish()
			l.report("cluster, "+r.String(), r.waitReplicas > 0, victims, killed, failover)
		})
	}
}

// clusterActions picks three actions of pack "fo" and a sparse one whose
// slots one master serves (the victim), and one served by another master.
func clusterActions(t *testing.T, e *env) (victim string, victims, others []string) {
	ctx := ctxT(t)
	k := keys.New(e.prefix)
	sparse := false
	for i := 0; len(victims) < 4 || len(others) < 1 || !sparse; i++ {
		a := fmt.Sprintf("fo.a%d", i)
		if i%2 == 1 {
			a = fmt.Sprintf("fo.sp%d", i)
		}
		m, err := e.cluster.MasterOf(ctx, k.Action(a).Queue())
		must(t, err)
		if victim == "" {
			victim = m
		}
		switch {
		case m == victim && isSparse(a) && !sparse:
			victims, sparse = append(victims, a), true
		case m == victim && !isSparse(a) && len(victims) < 3+boolInt(sparse):
			victims = append(victims, a)
		case m != victim && !isSparse(a) && len(others) < 1:
			others = append(others, a)
		}
	}
	return victim, victims, others
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSentinelFailoverUnderLoad SIGKILLs the master of a Sentinel group
// (master, two replicas, three sentinels) under load, the Coordinators on
// go-redis's failover client; the sentinels promote a replica and the other
// one follows it, so WaitReplicas 1 is met again without the old master.
// The killed server is revived after each run.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	g := redistest.StartSentinel(t)
	for _, r := range foRuns {
		t.Run(r.String(), func(t *testing.T) {
			ctx := ctxT(t)
			prefix := redistest.Prefix(t)
			actions := []string{"fo.s1", "fo.s2", "fo.s3", "fo.sp1"}
			log := newTestLog(t, "")
			cs := make([]*coordinator.Coordinator, foCoords)
			for i := range cs {
				rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.SentinelMasterName,
					SentinelAddrs: g.SentinelAddrs(), ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
				t.Cleanup(func() { rdb.Close() })
				c, err := coordinator.New(rdb, foOpts(prefix, r.waitReplicas, log))
				must(t, err)
				t.Cleanup(func() { c.Close() })
				cs[i] = c
			}
			setLimits(t, cs[0], actions)
			readPolicies(t, cs...)
			old, err := g.MasterAddr(ctx)
			must(t, err)
			l := startFailoverLoad(t, cs, actions)
			waitForAdmissions(t, l, actions, 200, "admissions before the kill")
			beforeKill(t, l, r, func() error { return g.StallReplicas(ctx) })
			killed := time.Now()
			promoted, err := g.KillMaster(ctx)
			must(t, err)
			failover := time.Since(killed)
			t.Logf("killed master %s; %s promoted after %v", old, promoted, failover.Round(time.Millisecond))
			l.long.Store(false)
			waitForAdmissions(t, l, actions, 50, "admissions after the failover")
			l.finish()
			l.report("sentinel, "+r.String(), r.waitReplicas > 0, actions, killed, failover)
			must(t, g.Revive(ctx))
		})
	}
}

// TestWaitReplicasWithoutReplicas: with WaitReplicas 1 on a server that has
// no replica, an admission fails with ErrNotReplicated after WaitTimeout
// and is undone (the slot is free again); reads still work.
func TestWaitReplicasWithoutReplicas(t *testing.T) {
	e := newRealEnv(t)
	ctx := ctxT(t)
	o := e.opts()
	o.WaitReplicas, o.WaitTimeout = 1, 100*time.Millisecond
	c := e.coordinator(o)
	_, err := c.EnqueueAndWait(ctx, "wait.none", "x1")
	if !errors.Is(err, coordinator.ErrNotReplicated) {
		t.Fatalf("admission without a replica: %v, want ErrNotReplicated", err)
	}
	st := e.stats(c, "wait.none")
	if st.ActiveCount != 0 || st.QueueLength != 0 {
		t.Fatalf("after the undone admission: %d active, %d queued; want 0 and 0", st.ActiveCount, st.QueueLength)
	}
}

// foLogLevel: errors only, as a failover makes every Coordinator warn many
// times; set it to slog.LevelWarn to see what they did.
var foLogLevel = slog.LevelError

package coordinator_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// TestStressLimitAndFIFO: 1,000 concurrent EnqueueAndWait on one action with
// limit 5, over 4 Coordinators with clients of their own. The test counts
// holders itself (never above 5), checks every request ends exactly once
// with a lease, and that grants (fencing tokens) follow arrival order (seq).
// It also runs on the cluster with WaitReplicas 1, where every grant read
// from BLPOP is confirmed (reconcile + WAIT) before it is delivered.
func TestStressLimitAndFIFO(t *testing.T) {
	tiers(t, stressLimitAndFIFO)
	t.Run("cluster-durable", func(t *testing.T) { stressLimitAndFIFO(t, durableClusterEnv(t)) })
}

func stressLimitAndFIFO(t *testing.T, e *env) {
	const (
		n     = 1000
		limit = 5
		procs = 4
		a     = "stress.run"
	)
	ctx := ctxT(t)
	var cs []*coordinator.Coordinator
	// A grant whose token stays unread for AckTimeout goes back to the
	// head of the queue and is granted again with a later token, which
	// this test would count as an inversion: give a process starved of
	// CPU room before that happens.
	o := e.opts()
	o.AckTimeout = 10 * time.Second
	for i := 0; i < procs; i++ {
		cs = append(cs, e.coordinator(o))
	}
	must(t, cs[0].SetConcurrencyLimit(ctx, limits.Action(a), limit))

	var held, maxHeld atomic.Int64
	type rec struct {
		seq, token int64
	}
	var mu sync.Mutex
	done := map[string]rec{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("x-%04d", i)
			l, err := cs[i%procs].EnqueueAndWait(ctx, a, id)
			if err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			h := held.Add(1)
			for {
				m := maxHeld.Load()
				if h <= m || maxHeld.CompareAndSwap(m, h) {
					break
				}
			}
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Microsecond)
			held.Add(-1)
			mu.Lock()
			if _, dup := done[id]; dup {
				t.Errorf("%s admitted twice", id)
			}
			done[id] = rec{l.Seq(), l.Token()}
			mu.Unlock()
			if err := l.Release(ctx); err != nil {
				t.Errorf("%s release: %v", id, err)
			}
		}()
	}
	wg.Wait()
	if m := maxHeld.Load(); m > limit {
		t.Fatalf("over-admitted: %d held at once, limit %d", m, limit)
	}
	if len(done) != n {
		t.Fatalf("%d of %d executions admitted", len(done), n)
	}
	recs := make([]rec, 0, n)
	for _, r := range done {
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(x, y rec) int { return int(x.seq - y.seq) })
	inversions := 0
	for i := 1; i < len(recs); i++ {
		if recs[i].seq == recs[i-1].seq {
			t.Fatalf("two executions share seq %d", recs[i].seq)
		}
		if recs[i].token < recs[i-1].token {
			inversions++
		}
	}
	if inversions > 0 {
		t.Fatalf("%d FIFO inversions: a later arrival was granted before an earlier one", inversions)
	}
	st := e.stats(cs[0], a)
	if st.ActiveCount != 0 || st.QueueLength != 0 || st.TotalAdmitted != n || st.TotalCompleted != n {
		t.Fatalf("final stats: %+v", st)
	}
	t.Logf("max held %d", maxHeld.Load())
}

// TestStrictFIFOObserved: executions submitted one after another from four
// Coordinators (each queued before the next is sent) are admitted in exactly
// that order, as the test itself observes with limit 1.
func TestStrictFIFOObserved(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		const n, a = 40, "fifo.one"
		ctx := ctxT(t)
		var cs []*coordinator.Coordinator
		for i := 0; i < 4; i++ {
			cs = append(cs, e.coordinator(e.opts()))
		}
		must(t, cs[0].SetConcurrencyLimit(ctx, limits.Action(a), 1))
		first := holdN(t, cs[0], a, 1)[0]

		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := cs[i%4].EnqueueAndWait(ctx, a, fmt.Sprintf("f-%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock() // only the holder of the single slot gets here
				order = append(order, i)
				mu.Unlock()
				if err := l.Release(ctx); err != nil {
					t.Error(err) // not Fatal: this is not the test's goroutine
				}
			}()
			eventually(t, 5*time.Second, "queued", func() bool { return e.stats(cs[0], a).QueueLength == int64(i+1) })
		}
		must(t, first.Release(ctx))
		wg.Wait()
		for i, got := range order {
			if got != i {
				t.Fatalf("admission order %v, want submission order", order)
			}
		}
	})
}

// TestStressClosedLoop: 40 clients over 4 Coordinators each submit, hold,
// release and think, 25 times, so the queue keeps emptying and refilling and
// both the fast path and the handoff run under contention. The test counts
// holders itself; never more than the limit.
func TestStressClosedLoop(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		const limit, clients, rounds, a = 3, 40, 25, "stress.loop"
		ctx := ctxT(t)
		var cs []*coordinator.Coordinator
		for i := 0; i < 4; i++ {
			cs = append(cs, e.coordinator(e.opts()))
		}
		must(t, cs[0].SetConcurrencyLimit(ctx, limits.Action(a), limit))
		var held, maxHeld, fast atomic.Int64
		var wg sync.WaitGroup
		for cl := 0; cl < clients; cl++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; r < rounds; r++ {
					start := time.Now()
					l, err := cs[cl%4].EnqueueAndWait(ctx, a, fmt.Sprintf("c%d-r%d", cl, r))
					if err != nil {
						t.Error(err)
						return
					}
					if time.Since(start) < 200*time.Microsecond {
						fast.Add(1)
					}
					h := held.Add(1)
					for {
						m := maxHeld.Load()
						if h <= m || maxHeld.CompareAndSwap(m, h) {
							break
						}
					}
					time.Sleep(time.Duration(1000+rand.IntN(1000)) * time.Microsecond)
					held.Add(-1)
					if err := l.Release(ctx); err != nil {
						t.Error(err)
						return
					}
					// Think: demand hovers around the limit, so the queue keeps
					// emptying while every slot is taken (the fast path's edge).
					time.Sleep(time.Duration(rand.IntN(36000)) * time.Microsecond)
				}
			}()
		}
		wg.Wait()
		if m := maxHeld.Load(); m > limit {
			t.Fatalf("over-admitted: %d held at once, limit %d", m, limit)
		}
		st := e.stats(cs[0], a)
		if st.TotalAdmitted != clients*rounds || st.ActiveCount != 0 || st.QueueLength != 0 {
			t.Fatalf("final stats: %+v", st)
		}
		t.Logf("max held %d of %d; %d admissions took under 200µs (fast path)", maxHeld.Load(), limit, fast.Load())
	})
}

package coordinator_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// Benchmarks run against the real redis-server that TestMain starts. Compare
// them with BenchmarkBaseline* from the same run: the machines are shared
// and noisy, so only ratios mean something.
//
//	go test -run '^$' -bench . -benchtime 20000x ./coordinator/

func benchEnv(b *testing.B) (*env, *coordinator.Coordinator) {
	b.Helper()
	e := newRealEnv(b)
	c := e.coordinator(coordinator.Options{Prefix: e.prefix, SweepInterval: -1})
	return e, c
}

// BenchmarkBaselinePing is one PING round trip.
func BenchmarkBaselinePing(b *testing.B) {
	e, _ := benchEnv(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

var trivial = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// BenchmarkBaselineEvalsha is one trivial one-key EVALSHA round trip.
func BenchmarkBaselineEvalsha(b *testing.B) {
	e, _ := benchEnv(b)
	ctx := context.Background()
	key := e.prefix + ":bench:trivial"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := trivial.Run(ctx, e.rdb, []string{key}).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFastPathAdmission is EnqueueAndWait with a free slot and nobody
// waiting (one enqueue.lua call); the slots are released outside the timer.
func BenchmarkFastPathAdmission(b *testing.B) {
	_, c := benchEnv(b)
	ctx := context.Background()
	const a = "bench.fast"
	leases := make([]*coordinator.Lease, 0, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := c.EnqueueAndWait(ctx, a, fmt.Sprintf("f-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		leases = append(leases, l)
		if len(leases) == cap(leases) {
			b.StopTimer()
			for _, l := range leases {
				l.Release(ctx)
			}
			leases = leases[:0]
			b.StartTimer()
		}
	}
}

// BenchmarkRelease is Lease.Release with nobody waiting (one release.lua call).
func BenchmarkRelease(b *testing.B) {
	_, c := benchEnv(b)
	ctx := context.Background()
	const a = "bench.release"
	leases := make([]*coordinator.Lease, 0, 1000)
	fill := func(from int) {
		leases = leases[:0]
		for i := 0; i < cap(leases); i++ {
			l, err := c.EnqueueAndWait(ctx, a, fmt.Sprintf("r-%d", from+i))
			if err != nil {
				b.Fatal(err)
			}
			leases = append(leases, l)
		}
	}
	b.StopTimer()
	fill(0)
	b.StartTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%cap(leases) == 0 {
			b.StopTimer()
			fill(i)
			b.StartTimer()
		}
		if err := leases[i%cap(leases)].Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueuedHandoff is one queued admission: limit 1 and four
// contending workers (each a Coordinator of its own), so every release hands
// the slot to a waiter that is already queued. One op is the enqueue,
// the release with the grant and the BLPOP reply (no acknowledgement since
// issue 7); waited>1ms/op reports the share of admissions that waited.
func BenchmarkQueuedHandoff(b *testing.B) {
	e := newRealEnv(b)
	ctx := context.Background()
	const a, workers = "bench.handoff", 4
	var cs []*coordinator.Coordinator
	for i := 0; i < workers; i++ {
		cs = append(cs, e.coordinator(coordinator.Options{Prefix: e.prefix, SweepInterval: -1}))
	}
	if err := cs[0].SetConcurrencyLimit(ctx, limits.Action(a), 1); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	before := e.stats(cs[0], a)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				l, err := cs[w].EnqueueAndWait(ctx, a, fmt.Sprintf("h-%d", i))
				if err != nil {
					b.Error(err)
					return
				}
				if err := l.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	after := e.stats(cs[0], a)
	waited := after.Wait.Count - before.Wait.Count - (after.Wait.Buckets[0] - before.Wait.Buckets[0])
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "admissions/s")
	b.ReportMetric(float64(waited)/float64(b.N), "waited>1ms/op")
}

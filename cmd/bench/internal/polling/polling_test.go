package polling

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// The hand-written limiter keeps its limit (checked by the test's own
// bookkeeping) and gives every slot back.
func TestPollingKeepsTheLimit(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	lim := Limiter{Redis: rdb, Prefix: "t", Limit: 2, Interval: time.Millisecond}
	ctx := context.Background()
	var running, most atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 5 {
				g, err := lim.Acquire(ctx, "p.a", "")
				if err != nil {
					t.Error(err)
					return
				}
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(time.Millisecond)
				running.Add(-1)
				if err := g.Release(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if most.Load() > 2 {
		t.Errorf("%d held at once, limit 2", most.Load())
	}
	if v, _ := rdb.Get(ctx, lim.Key("p.a")).Int(); v != 0 {
		t.Errorf("counter %d after all released", v)
	}
}

func TestPollingStopsWithTheContext(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	lim := Limiter{Redis: rdb, Prefix: "t", Limit: 0, Interval: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lim.Acquire(ctx, "p.a", ""); err == nil {
		t.Fatal("admitted over a limit of 0")
	}
}

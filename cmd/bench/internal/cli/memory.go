package cli

import (
	"context"
	"fmt"
	"github.com/batonhq/baton/internal/keys"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/fixture"
	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// fixtureOwner is the owner ID of the executions the fixtures store: 3
// characters, the length of the short ID a Coordinator reserves in Redis.
const fixtureOwner = "fx1"

// controlCoordinator is a Coordinator that does no background sweeping;
// closeC closes it.
func controlCoordinator(ctx context.Context, f *Flags, e *env, pool int) (*redis.Client, *coordinator.Coordinator, func(), error) {
	rdb, _, err := loadgen.Connect(e.url, pool)
	if err != nil {
		return nil, nil, nil, err
	}
	opts := f.coordinatorOptions(e.prefix)
	opts.SweepInterval = -1
	c, closeC, err := loadgen.NewCoordinator(ctx, rdb, nil, opts)
	if err != nil {
		rdb.Close()
		return nil, nil, nil, err
	}
	return rdb, c, closeC, nil
}

// enqueuer returns a fixture Enqueuer that passes the current policy.
func enqueuer(ctx context.Context, c *coordinator.Coordinator, rdb *redis.Client, prefix string, limit int, source string) (fixture.Enqueuer, error) {
	p, err := c.Policies(ctx)
	if err != nil {
		return fixture.Enqueuer{}, err
	}
	return fixture.Enqueuer{Redis: rdb, Prefix: prefix, Owner: fixtureOwner, Ack: 5 * time.Second,
		Policy: fixture.Policy{Version: p.Version, Limit: limit, Source: source}}, nil
}

func runMemory(ctx context.Context, f *Flags, e *env) (*report.Report, error) {
	r := e.newReport("memory")
	rdb, c, closeC, err := controlCoordinator(ctx, f, e, 128)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	defer e.cleanup(rdb)
	defer closeC()
	m := &report.Memory{Queued: f.Queued, IDBytes: f.IDBytes}
	r.Memory = m

	// One action, paused (limit 0): everything enqueued waits.
	const ref = "bench.memory"
	if err := c.SetConcurrencyLimit(ctx, limits.Action(ref), 0); err != nil {
		return nil, err
	}
	q, err := enqueuer(ctx, c, rdb, e.prefix, 0, "action:"+ref)
	if err != nil {
		return nil, err
	}
	tag := randomHex(4)
	// The first waiter creates the action's fixed keys (meta, owners, ...),
	// which are not a per-queued cost.
	if _, err := q.Enqueue(ctx, []fixture.Job{{Ref: ref, ID: fixture.ID(tag, 0, f.IDBytes), Lease: time.Hour}}); err != nil {
		return nil, err
	}
	if !e.miniredis {
		if err := redisstats.WaitLazyFree(ctx, rdb, 30*time.Second); err != nil {
			return nil, err
		}
		if m.UsedBefore, err = redisstats.UsedMemory(ctx, rdb); err != nil {
			return nil, err
		}
	}
	jobs := make([]fixture.Job, f.Queued)
	for i := range jobs {
		jobs[i] = fixture.Job{Ref: ref, ID: fixture.ID(tag, i+1, f.IDBytes), Lease: time.Hour}
	}
	start := time.Now()
	res, err := q.Enqueue(ctx, jobs)
	if err != nil {
		return nil, err
	}
	m.FillS = time.Since(start).Seconds()
	if res.Queued != f.Queued {
		return nil, fmt.Errorf("memory: %d of %d queued", res.Queued, f.Queued)
	}
	if e.miniredis {
		r.Notes = append(r.Notes, "miniredis has no INFO memory: bytes_per_queued needs --redis")
	} else {
		if m.UsedAfter, err = redisstats.UsedMemory(ctx, rdb); err != nil {
			return nil, err
		}
		m.BytesPerQueued = float64(m.UsedAfter-m.UsedBefore) / float64(f.Queued)
		m.KeyBytes = map[string]int64{}
		names := []string{"queue", "waiting", "running", "holders", "owners", "meta", "waits", "quota"}
		var sum int64
		for i, k := range keys.New(e.prefix).Action(ref).List {
			if n, err := rdb.MemoryUsage(ctx, k, 0).Result(); err == nil {
				m.KeyBytes[names[i]] = n
				sum += n
			}
		}
		m.KeyBytesPerQueued = float64(sum) / float64(f.Queued)
	}
	if m.Enqueue1000Ms, err = burst(ctx, c, "bench.burst", 1000); err != nil {
		return nil, err
	}
	return r, nil
}

// burst starts n EnqueueAndWait calls at once on a paused action and returns
// how long until all n were in the queue (ms). It then cancels them.
func burst(ctx context.Context, c *coordinator.Coordinator, ref string, n int) (float64, error) {
	if err := c.SetConcurrencyLimit(ctx, limits.Action(ref), 0); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	tag := randomHex(4)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			_, _ = c.EnqueueAndWait(wctx, ref, fixture.ID(tag, i, 36))
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.QueueStats(ctx, ref)
		if err != nil {
			return 0, err
		}
		if st.QueueLength >= int64(n) {
			return float64(time.Since(start)) / float64(time.Millisecond), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("burst: %d executions not queued within 30s", n)
}

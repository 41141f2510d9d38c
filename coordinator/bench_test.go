package coordinator_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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
// issue 7); waited>1ms/op reports the share of admissions that waited;
// redis-cpu-µs/op the server's CPU per admission.
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
	meter := newCPUMeter(b, e.rdb)
	b.ResetTimer()
	meter.start()
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
	meter.report(b.N)
	after := e.stats(cs[0], a)
	waited := after.Wait.Count - before.Wait.Count - (after.Wait.Buckets[0] - before.Wait.Buckets[0])
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "admissions/s")
	b.ReportMetric(float64(waited)/float64(b.N), "waited>1ms/op")
}

// redisCPU reads the server's CPU time (user + system) in microseconds.
func redisCPU(b *testing.B, rdb redis.UniversalClient) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total * 1e6
}

// scriptTime reads the calls and the µs Redis spent running scripts
// (FCALL, EVALSHA, EVAL), from INFO commandstats: the Lua work alone,
// without the system calls that dominate a call's whole cost.
func scriptTime(b *testing.B, rdb redis.UniversalClient) (calls, usec float64) {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "cmdstat_fcall" && name != "cmdstat_evalsha" && name != "cmdstat_eval") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			f, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				calls += f
			case "usec":
				usec += f
			}
		}
	}
	return calls, usec
}

// cpuMeter measures the Redis CPU a benchmark's operations cost: the CPU
// used between start and stop, less what the idle server used over the
// same time (measured for half a second before start); and the µs per
// script call spent in Lua.
type cpuMeter struct {
	b             *testing.B
	rdb           redis.UniversalClient
	idlePerSec    float64
	cpu0          float64
	calls0, usec0 float64
	t0            time.Time
}

func newCPUMeter(b *testing.B, rdb redis.UniversalClient) *cpuMeter {
	m := &cpuMeter{b: b, rdb: rdb}
	c0, t0 := redisCPU(b, rdb), time.Now()
	time.Sleep(500 * time.Millisecond)
	m.idlePerSec = (redisCPU(b, rdb) - c0) / time.Since(t0).Seconds()
	return m
}

func (m *cpuMeter) start() {
	m.calls0, m.usec0 = scriptTime(m.b, m.rdb)
	m.cpu0, m.t0 = redisCPU(m.b, m.rdb), time.Now()
}

// report adds redis-cpu-µs/op and lua-µs/call.
func (m *cpuMeter) report(ops int) {
	used := redisCPU(m.b, m.rdb) - m.cpu0 - m.idlePerSec*time.Since(m.t0).Seconds()
	m.b.ReportMetric(used/float64(ops), "redis-cpu-µs/op")
	calls, usec := scriptTime(m.b, m.rdb)
	if calls > m.calls0 {
		m.b.ReportMetric((usec-m.usec0)/(calls-m.calls0), "lua-µs/call")
	}
}

// cmdCounter counts the commands a client sends (each command of a
// pipeline counts), leaving out a new connection's handshake.
type cmdCounter struct{ n atomic.Int64 }

func (h *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n != "hello" && n != "client" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// BenchmarkThrottle compares, in one run, the cost of an admission that
// waits for a rate token with unthrottled ones. Two Coordinators, whose
// clients count the commands they send, each run one worker per action on 8
// actions (so Redis stays busy, as in production, rather than idle between
// admissions: an idle vCPU makes every call slower); each worker admits and
// releases in a loop. Every figure is per admission (enqueue to release),
// Redis CPU included.
//
//   - fast: no rate, no limit: enqueue (admitted at once) and release.
//   - queued: no rate, limit 1: most admissions wait for the other worker's
//     release (enqueue, the BLPOP reply, release).
//   - throttled: no limit, a rate of one token per 5 ms and burst 1 per
//     action: every admission waits for its token (enqueue, the tick that
//     the script which found the head throttled scheduled, the BLPOP reply,
//     release).
//   - throttled-burst: the same rate with a burst of 4, so that an admission
//     the tick made late leaves the next ones their time: GCRA charges a
//     late admission from the moment it happened, which with no burst
//     lowers the achieved rate by the lateness.
//
// The throttled modes report late-µs/op: how much longer than the nominal
// interval (Per/Limit) an admission took on average, i.e. the throttle's
// accuracy (the achieved rate is 1/(5 ms + late)).
//
//	go test -run '^$' -bench Throttle -benchtime 2000x ./coordinator/
func BenchmarkThrottle(b *testing.B) {
	const interval = 5 * time.Millisecond
	const workers, actions = 2, 8
	for _, mode := range []string{"fast", "queued", "throttled", "throttled-burst"} {
		b.Run(mode, func(b *testing.B) {
			e := newRealEnv(b)
			ctx := context.Background()
			refs := make([]string, actions)
			for i := range refs {
				refs[i] = fmt.Sprintf("bench.%s%d", strings.ReplaceAll(mode, "-", ""), i)
			}
			hook := &cmdCounter{}
			var cs []*coordinator.Coordinator
			for w := 0; w < workers; w++ {
				rdb, wait := e.client(), e.waitClient()
				rdb.AddHook(hook)
				wait.AddHook(hook)
				c, err := coordinator.New(rdb, coordinator.Options{Prefix: e.prefix, SweepInterval: -1, WaitClient: wait})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if err := c.Ready(ctx); err != nil {
					b.Fatal(err)
				}
				cs = append(cs, c)
			}
			switch mode {
			case "queued":
				if err := cs[0].SetConcurrencyLimit(ctx, limits.Pack("bench"), 1); err != nil {
					b.Fatal(err)
				}
			case "throttled", "throttled-burst":
				burst := 1
				if mode == "throttled-burst" {
					burst = 4
				}
				if err := cs[0].SetRateLimit(ctx, limits.Pack("bench"), limits.Rate{Limit: 1, Per: interval, Burst: burst}); err != nil {
					b.Fatal(err)
				}
			}
			stats := func() (throttled, waited int64) {
				for _, a := range refs {
					st := e.stats(cs[0], a)
					throttled += st.TotalThrottled
					waited += st.Wait.Count - st.Wait.Buckets[0]
				}
				return throttled, waited
			}
			meter := newCPUMeter(b, e.rdb)
			throttled0, waited0 := stats()
			n0 := hook.n.Load()
			var next atomic.Int64
			b.ResetTimer()
			meter.start()
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < workers*actions; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						l, err := cs[w%workers].EnqueueAndWait(ctx, refs[w/workers], fmt.Sprintf("x-%d", i))
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
			elapsed := time.Since(start)
			b.StopTimer()
			meter.report(b.N)
			cmds := hook.n.Load() - n0
			throttled1, waited1 := stats()
			b.ReportMetric(float64(cmds)/float64(b.N), "cmds/op")
			b.ReportMetric(float64(throttled1-throttled0)/float64(b.N), "throttled/op")
			b.ReportMetric(float64(waited1-waited0)/float64(b.N), "waited>1ms/op")
			if strings.HasPrefix(mode, "throttled") {
				// Each action admits b.N/actions executions one after another.
				late := elapsed*actions/time.Duration(b.N) - interval
				b.ReportMetric(float64(late.Microseconds()), "late-µs/op")
			}
		})
	}
}

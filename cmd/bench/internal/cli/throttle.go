package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/ratecheck"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// grantSlack is the resolution of the recorded grant times (the holder
// record keeps milliseconds): the throttle bound is checked over every
// interval widened by it.
const grantSlack = time.Millisecond

// rateBench is what the throttle and quota modes share: a Coordinator whose
// commands are counted, and a second one on an uncounted client for the
// bench's own bookkeeping reads (grant times), so that they are not charged
// to admissions.
type rateBench struct {
	f       *Flags
	e       *env
	rdb     *redis.Client
	counter *redisstats.Counter
	c       *coordinator.Coordinator
	book    *coordinator.Coordinator
	close   func()
}

func newRateBench(ctx context.Context, f *Flags, e *env) (*rateBench, error) {
	wl := f.Workload
	rdb, counter, err := loadgen.Connect(e.url, loadgen.PoolSize(wl.Clients, wl.Actions*2))
	if err != nil {
		return nil, err
	}
	c, closeC, err := loadgen.NewCoordinator(ctx, rdb, counter, f.coordinatorOptions(e.prefix))
	if err != nil {
		rdb.Close()
		return nil, err
	}
	brdb, _, err := loadgen.Connect(e.url, wl.Clients+4)
	if err != nil {
		closeC()
		rdb.Close()
		return nil, err
	}
	bopts := f.coordinatorOptions(e.prefix)
	bopts.SweepInterval = -1
	book, closeBook, err := loadgen.NewCoordinator(ctx, brdb, nil, bopts)
	if err != nil {
		brdb.Close()
		closeC()
		rdb.Close()
		return nil, err
	}
	return &rateBench{f: f, e: e, rdb: rdb, counter: counter, c: c, book: book, close: func() {
		closeBook()
		brdb.Close()
		closeC()
		e.cleanup(rdb)
		rdb.Close()
	}}, nil
}

// refs names the workload's actions in pack.
func (b *rateBench) refs(pack string) []string {
	out := make([]string, b.f.Workload.Actions)
	for i := range out {
		out[i] = fmt.Sprintf("%s.a%d", pack, i)
	}
	return out
}

// idleCPU measures Redis's CPU time per second with no load, so that the
// load's own can be told apart from the event loop and cron (0 on
// miniredis or when INFO cpu fails).
func (b *rateBench) idleCPU(ctx context.Context, d time.Duration) float64 {
	if b.e.miniredis {
		return 0
	}
	c0, err := redisstats.ReadCPU(ctx, b.rdb)
	if err != nil {
		return 0
	}
	t0 := time.Now()
	time.Sleep(d)
	c1, err := redisstats.ReadCPU(ctx, b.rdb)
	if err != nil {
		return 0
	}
	return float64(c1-c0) / time.Since(t0).Seconds()
}

// throttlePhase is one load run of the throttle mode.
type throttlePhase struct {
	cost       report.RateCost
	admissions map[string][]ratecheck.Admission
	failures   map[string]int
}

// runPhase runs the workload's executions on refs with closed-loop
// clients: each admission's grant time is read back (bookkeeping client)
// before its work and release.
func (b *rateBench) runPhase(ctx context.Context, name string, refs []string, idleUsPerS float64) (*throttlePhase, error) {
	wl := b.f.Workload
	ph := &throttlePhase{admissions: map[string][]ratecheck.Admission{}, failures: map[string]int{}}
	next := make([]atomic.Int64, len(refs))
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		ph.failures[err.Error()]++
		mu.Unlock()
	}
	before := b.counter.Snapshot()
	cpu0, cpuErr := redisstats.ReadCPU(ctx, b.rdb)
	start := time.Now()
	var wg sync.WaitGroup
	for cl := range wl.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), uint64(start.UnixNano())))
			a := cl % len(refs)
			ref := refs[a]
			for {
				n := next[a].Add(1)
				if n > int64(wl.Executions) || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("%s-%s-%d", runID, name, n)
				l, err := b.c.EnqueueAndWait(ctx, ref, id)
				if err != nil {
					fail(err)
					continue
				}
				st, err := b.book.ExecutionState(ctx, ref, id)
				switch {
				case err != nil:
					fail(err)
				case st.Status != coordinator.StatusRunning || st.Token != l.Token():
					fail(fmt.Errorf("granted execution read back as %s, token %d", st.Status, st.Token))
				default:
					mu.Lock()
					ph.admissions[ref] = append(ph.admissions[ref], ratecheck.Admission{Token: l.Token(), Seq: l.Seq(), At: st.RunningSince})
					mu.Unlock()
				}
				time.Sleep(wl.Work.Sample(rng))
				if err := l.Release(ctx); err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	counts := b.counter.Snapshot().Sub(before)
	n := 0
	for _, a := range ph.admissions {
		n += len(a)
	}
	c := &ph.cost
	c.Phase, c.Admissions, c.WallS = name, n, wall.Seconds()
	if n > 0 {
		c.AdmittedPerS = float64(n) / wall.Seconds()
		c.CmdsPerAdmission = float64(counts.Total()) / float64(n)
		c.RoundTripsPerAdmission = float64(counts.RoundTrips) / float64(n)
		c.CommandsPerAdmission = map[string]float64{}
		for k, v := range counts.Commands {
			c.CommandsPerAdmission[k] = float64(v) / float64(n)
		}
	}
	if cpuErr == nil && !b.e.miniredis {
		if cpu1, err := redisstats.ReadCPU(ctx, b.rdb); err == nil && n > 0 {
			c.RedisCPUUsPerAdmission = float64(cpu1-cpu0) / float64(n)
			c.RedisCPUUsPerAdmissionNetOfIdle = (float64(cpu1-cpu0) - idleUsPerS*wall.Seconds()) / float64(n)
		}
	}
	for _, ref := range refs {
		st, err := b.c.QueueStats(ctx, ref)
		if err != nil {
			return nil, err
		}
		c.Throttled += st.TotalThrottled
	}
	return ph, nil
}

// runThrottle runs the workload twice in one run, on actions without a rate
// and then on actions with --rate/--burst (the same concurrency limit), and
// checks the throttled run against the bound over every interval, its
// admission spacing against per/limit, and FIFO order in both.
func runThrottle(ctx context.Context, f *Flags, e *env) (*report.Report, error) {
	wl := f.Workload
	r := e.newReport("throttle")
	r.Workload = &wl
	rate, err := limits.ParseRateSpec(f.RateText, f.Burst)
	if err != nil {
		return nil, err
	}
	b, err := newRateBench(ctx, f, e)
	if err != nil {
		return nil, err
	}
	defer b.close()
	free, thr := b.refs("free"+randomHex(2)), b.refs("thr"+randomHex(2))
	for _, p := range []string{limits.PackOf(free[0]), limits.PackOf(thr[0])} {
		if err := b.c.SetConcurrencyLimit(ctx, limits.Pack(p), wl.Limit); err != nil {
			return nil, err
		}
	}
	if err := b.c.SetRateLimit(ctx, limits.Pack(limits.PackOf(thr[0])), rate); err != nil {
		return nil, err
	}
	idle := b.idleCPU(ctx, time.Second)
	t := throttleFigures{&report.Throttle{Rate: limits.RateSpec(rate), Burst: rate.Burst,
		ExpectedSpacingMs: ms(rate.Per / time.Duration(max(rate.Limit, 1))), IdleRedisCPUUsPerS: idle}}
	r.Throttle = t.Throttle
	failures := map[string]int{}
	for i, phase := range []struct {
		name string
		refs []string
	}{{"unthrottled", free}, {"throttled", thr}} {
		ph, err := b.runPhase(ctx, phase.name, phase.refs, idle)
		if err != nil {
			return nil, err
		}
		for msg, n := range ph.failures {
			failures[msg] += n
		}
		t.Phases = append(t.Phases, ph.cost)
		t.addPhase(ph.admissions, rate, i == 1)
		if lost := wl.Planned() - ph.cost.Admissions; lost > 0 {
			r.Failed = append(r.Failed, fmt.Sprintf("%s: %d of %d executions not admitted and recorded", phase.name, lost, wl.Planned()))
		}
	}
	t.finish()
	t.Failures = failures
	if t.ExcessAdmissions > 0 {
		r.Failed = append(r.Failed, fmt.Sprintf("throttle bound exceeded: up to %d admissions over limit*T/per + max(burst, 1) in an interval (%d admissions end such an interval)",
			t.ExcessAdmissions, t.AdmissionsOverBound))
	}
	if t.FIFOInversions > 0 {
		r.Failed = append(r.Failed, fmt.Sprintf("%d FIFO inversions", t.FIFOInversions))
	}
	if len(failures) > 0 {
		r.Failed = append(r.Failed, fmt.Sprintf("%d client errors", sumValues(failures)))
	}
	r.Notes = append(r.Notes,
		"grant times are the holder records' (Redis clock, milliseconds), read back by a second, uncounted client after each admission: the bound is checked over every interval between two admissions, widened by 1 ms",
		"both phases pay that read back in Redis CPU; the client counts leave it out",
		"redis_cpu_us_per_admission_net subtracts Redis's idle CPU per second, measured just before, times the phase's wall time (the throttled phase lasts longer)")
	if e.miniredis {
		r.Notes = append(r.Notes, "miniredis has no INFO cpu: Redis CPU figures need --redis")
	}
	return r, nil
}

// throttleFigures gathers the checks of the throttle mode's phases.
type throttleFigures struct{ *report.Throttle }

// addPhase checks one phase's admissions: FIFO order always; the bound and
// the spacing when the phase was throttled.
func (t throttleFigures) addPhase(admissions map[string][]ratecheck.Admission, rate limits.Rate, throttled bool) {
	for _, ref := range slices.Sorted(maps.Keys(admissions)) {
		adm := admissions[ref]
		t.FIFOInversions += ratecheck.FIFOInversions(adm)
		if !throttled {
			continue
		}
		worst, over := ratecheck.Excess(adm, ratecheck.Bound{Limit: rate.Limit, Per: rate.Per, Burst: rate.Burst, Slack: grantSlack})
		t.ExcessAdmissions = max(t.ExcessAdmissions, worst)
		t.AdmissionsOverBound += over
		sp := ratecheck.Spacings(adm, rate.Burst)
		t.Gaps += sp.N
		t.MeanSpacingMs += ms(sp.Mean) * float64(sp.N) // a sum until finish
		t.WorstP99SpacingMs = max(t.WorstP99SpacingMs, ms(sp.P99))
		t.P50SpacingMs = append(t.P50SpacingMs, ms(sp.P50))
	}
}

// finish turns the sums into means and the phases into the throttled
// admission's extra cost.
func (t throttleFigures) finish() {
	if t.Gaps > 0 {
		t.MeanSpacingMs /= float64(t.Gaps)
		t.SpacingRatio = t.MeanSpacingMs / t.ExpectedSpacingMs
	}
	if len(t.Phases) != 2 {
		return
	}
	u, th := t.Phases[0], t.Phases[1]
	t.ExtraCmdsPerAdmission = th.CmdsPerAdmission - u.CmdsPerAdmission
	t.ExtraRoundTripsPerAdmission = th.RoundTripsPerAdmission - u.RoundTripsPerAdmission
	if u.RedisCPUUsPerAdmissionNetOfIdle > 0 {
		t.ExtraRedisCPUUsPerAdmission = th.RedisCPUUsPerAdmissionNetOfIdle - u.RedisCPUUsPerAdmissionNetOfIdle
	}
}

// runQuota runs closed-loop clients on actions with the --quota for
// --duration: each request is accepted (then works and releases) or refused
// with a *QuotaError; it checks that every window accepted exactly the
// quota's limit where more was asked, and never more.
func runQuota(ctx context.Context, f *Flags, e *env) (*report.Report, error) {
	wl := f.Workload
	r := e.newReport("quota")
	r.Workload = &wl
	q, err := limits.ParseQuotaSpec(f.QuotaText)
	if err != nil {
		return nil, err
	}
	b, err := newRateBench(ctx, f, e)
	if err != nil {
		return nil, err
	}
	defer b.close()
	refs := b.refs("quota" + randomHex(2))
	pack := limits.Pack(limits.PackOf(refs[0]))
	if err := b.c.SetConcurrencyLimit(ctx, pack, wl.Limit); err != nil {
		return nil, err
	}
	if err := b.c.SetQuota(ctx, pack, q); err != nil {
		return nil, err
	}
	var (
		mu        sync.Mutex
		decisions []ratecheck.Decision
		failures  = map[string]int{}
		seq       atomic.Int64
		wg        sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(f.Duration)
	// The run lasts --duration and then until every action has been refused
	// at least once (its window used up, whatever the machine's speed), but
	// never past --timeout.
	refused := make([]atomic.Bool, len(refs))
	allRefused := func() bool {
		for i := range refused {
			if !refused[i].Load() {
				return false
			}
		}
		return true
	}
	for cl := range wl.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), uint64(start.UnixNano())))
			ref := refs[cl%len(refs)]
			for (time.Now().Before(deadline) || !allRefused()) && ctx.Err() == nil {
				id := fmt.Sprintf("%s-q-%d", runID, seq.Add(1))
				l, err := b.c.EnqueueAndWait(ctx, ref, id)
				var qe *coordinator.QuotaError
				switch {
				case err == nil:
					mu.Lock()
					decisions = append(decisions, ratecheck.Decision{Action: ref, Window: q.Window.Start(l.EnqueuedAt()), Accepted: true})
					mu.Unlock()
					time.Sleep(wl.Work.Sample(rng))
					if err := l.Release(ctx); err != nil {
						mu.Lock()
						failures[err.Error()]++
						mu.Unlock()
					}
				case errors.As(err, &qe):
					refused[cl%len(refs)].Store(true)
					mu.Lock()
					decisions = append(decisions, ratecheck.Decision{Action: ref, Window: qe.RetryAt.Add(-q.Window.Duration())})
					mu.Unlock()
					time.Sleep(quotaRetryPause)
				default:
					mu.Lock()
					failures[err.Error()]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	ws := ratecheck.Windows(decisions)
	v := ratecheck.Judge(ws, int(q.Limit))
	qr := &report.Quota{Quota: q.String(), DurationS: time.Since(start).Seconds(), Windows: ws, Exact: v.Exact, Over: v.Over,
		Early: v.Early, Short: v.Short, Failures: failures}
	for _, w := range ws {
		qr.Accepted += w.Accepted
		qr.Rejected += w.Rejected
	}
	for _, ref := range refs {
		st, err := b.c.QueueStats(ctx, ref)
		if err != nil {
			return nil, err
		}
		qr.QuotaRejectedCounted += st.TotalQuotaRejected
	}
	r.Quota = qr
	if v.Over > 0 {
		r.Failed = append(r.Failed, fmt.Sprintf("%d windows accepted more than %d", v.Over, q.Limit))
	}
	if v.Early > 0 {
		r.Failed = append(r.Failed, fmt.Sprintf("%d windows refused a request before %d were accepted", v.Early, q.Limit))
	}
	if len(failures) > 0 {
		r.Failed = append(r.Failed, fmt.Sprintf("%d client errors", sumValues(failures)))
	}
	r.Notes = append(r.Notes, fmt.Sprintf("a refused client waits %s before its next request", quotaRetryPause),
		"an accepted request counts in the window of its enqueue (Lease.EnqueuedAt, Redis clock); a refused one in the window its RetryAt ends")
	if v.Short > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d windows were asked for fewer than the limit (the run began or ended in them): not checked for exactness", v.Short))
	}
	return r, nil
}

// quotaRetryPause is how long a refused client waits before asking again.
const quotaRetryPause = 10 * time.Millisecond

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

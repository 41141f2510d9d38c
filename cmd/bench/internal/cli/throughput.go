package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/calibrate"
	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/polling"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

func (f *Flags) coordinatorOptions(prefix string) loadgen.CoordinatorOptions {
	return loadgen.CoordinatorOptions{Prefix: prefix, LeaseTTL: f.LeaseTTL, AckTimeout: f.AckTimeout, SweepInterval: f.SweepInterval,
		WaitReplicas: f.WaitReplicas, WaitTimeout: f.WaitTimeout}
}

func (f *Flags) calibrating(e *env) bool {
	if f.CalibrateSet {
		return f.Calibrate
	}
	return !e.miniredis
}

// setLimits gives every action of the workload its limit.
func setLimits(ctx context.Context, c *coordinator.Coordinator, refs []string, limit int) error {
	for _, ref := range refs {
		if err := c.SetConcurrencyLimit(ctx, limits.Action(ref), limit); err != nil {
			return err
		}
	}
	return nil
}

func runThroughput(ctx context.Context, f *Flags, e *env, stderr io.Writer) (*report.Report, error) {
	wl := f.Workload
	r := e.newReport("throughput")
	r.Workload = &wl
	rdb, counter, err := loadgen.Connect(e.url, loadgen.PoolSize(wl.Clients, wl.Actions))
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	defer e.cleanup(rdb)
	copts := f.coordinatorOptions(e.prefix)
	if wl.Processes > 1 {
		copts.SweepInterval = -1 // the parent only sets limits; the children sweep
	}
	c, closeC, err := loadgen.NewCoordinator(ctx, rdb, counter, copts)
	if err != nil {
		return nil, err
	}
	defer closeC()
	if err := setLimits(ctx, c, wl.Refs(), wl.Limit); err != nil {
		return nil, err
	}
	if f.calibrating(e) {
		res, err := calibrate.Measure(ctx, rdb, wl.Clients, f.CalibrateDuration, 10_000_000, e.prefix)
		if err != nil {
			return nil, err
		}
		r.Calibration = &res
	}

	info := newInfoDiff(ctx, rdb, e)
	col := loadgen.NewCollector()
	stop := startProgress(stderr, f.Progress, "baton", wl.Planned(), col.Progress)
	var counts redisstats.Counts
	if wl.Processes == 1 {
		before := counter.Snapshot()
		loadgen.Run(ctx, loadgen.Baton{C: c}, f.loadConfig(0), col.Add)
		counts = counter.Snapshot().Sub(before)
	} else {
		children, err := startChildren(ctx, f, e, col)
		if err != nil {
			stop()
			return nil, err
		}
		for _, ch := range children {
			if err := ch.Wait(ctx); err != nil {
				r.Notes = append(r.Notes, fmt.Sprintf("child %d: %v", ch.Process, err))
			}
		}
		counts = col.Counts()
	}
	stop()
	s := metrics.Summarize(col.Executions(), wl.Planned(), wl.Limit, 0)
	r.Load = report.NewLoad("baton", s, counts, info.done(ctx), col.Failures())
	r.Load.SetRedisUsec(info.usec)
	r.Load.SetRedisCPU(info.cpu)
	if n := info.cpuNote(); n != "" {
		r.Notes = append(r.Notes, n)
	}
	if wl.Processes > 1 {
		r.Notes = append(r.Notes, "redis_cmds_per_admission counts the children's commands; the parent only set the limits")
	}
	finishThroughput(r, f)
	r.Failed = broken(r.Load)

	if f.Via == "http" {
		h, err := runViaHTTP(ctx, f, e, stderr)
		if err != nil {
			return nil, err
		}
		r.ViaHTTP = h
		r.Failed = append(r.Failed, broken(h)...)
		r.Notes = append(r.Notes, viaHTTPNote(r.Load, h))
	}
	if f.Baseline == "polling" {
		base, note, err := runPolling(ctx, f, e, stderr)
		if err != nil {
			return nil, err
		}
		r.Baseline = base
		if note != "" && !e.miniredis { // on miniredis the run's own note says it
			r.Notes = append(r.Notes, "polling baseline: "+note)
		}
	}
	return r, nil
}

func (f *Flags) loadConfig(process int) loadgen.Config {
	return loadgen.Config{RunID: runID, Process: process, Clients: f.Workload.ClientsOf(process), Work: f.Workload.Work}
}

// runID makes this run's execution IDs unique on a shared Redis.
var runID = "r" + randomHex(3)

func finishThroughput(r *report.Report, f *Flags) {
	wl := f.Workload
	if wl.Work.Mean > 0 {
		r.WorkBoundAdmissionsPerS = float64(wl.Actions*wl.Limit) / wl.Work.Mean.Seconds()
	}
	if r.Calibration != nil && r.Load.RedisCmdsPerAdmission > 0 {
		r.CeilingAdmissionsPerS = r.Calibration.EvalshaPerS / r.Load.RedisCmdsPerAdmission
		r.Efficiency = r.Load.AdmittedPerS / r.CeilingAdmissionsPerS
	}
}

// broken lists the promises a load run broke.
func broken(l *report.Load) []string {
	var out []string
	if l.LimitViolations > 0 {
		out = append(out, fmt.Sprintf("limit_violations=%d", l.LimitViolations))
	}
	if l.FIFOInversions > 0 {
		out = append(out, fmt.Sprintf("fifo_inversions=%d", l.FIFOInversions))
	}
	if l.Lost > 0 {
		out = append(out, fmt.Sprintf("lost=%d", l.Lost))
	}
	return out
}

func startChildren(ctx context.Context, f *Flags, e *env, col *loadgen.Collector) ([]*loadgen.Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var children []*loadgen.Child
	killAll := func() {
		for _, ch := range children {
			_ = ch.Kill()
		}
	}
	for p := range f.Workload.Processes {
		spec := loadgen.Spec{Redis: e.url, Cluster: e.cluster, Coordinator: f.coordinatorOptions(e.prefix), Config: f.loadConfig(p),
			Timeout: f.Timeout, Actions: f.Workload.Actions}
		ch, err := loadgen.StartChild(exe, spec, col)
		if err != nil {
			killAll()
			return nil, err
		}
		children = append(children, ch)
	}
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, ch := range children {
		if err := ch.WaitReady(readyCtx); err != nil {
			killAll()
			return nil, err
		}
	}
	for _, ch := range children {
		if err := ch.Go(); err != nil {
			killAll()
			return nil, err
		}
	}
	return children, nil
}

// runPolling runs the same workload on the polling limiter, in this process.
// note says why its Redis CPU figure is missing ("" when it is not).
func runPolling(ctx context.Context, f *Flags, e *env, stderr io.Writer) (l *report.Load, note string, err error) {
	wl := f.Workload
	rdb, counter, err := loadgen.Connect(e.url, loadgen.PoolSize(wl.Clients, wl.Actions))
	if err != nil {
		return nil, "", err
	}
	defer rdb.Close()
	lim := polling.Limiter{Redis: rdb, Prefix: e.prefix, Limit: int64(wl.Limit)}
	info := newInfoDiff(ctx, rdb, e)
	col := loadgen.NewCollector()
	stop := startProgress(stderr, f.Progress, "polling", wl.Planned(), col.Progress)
	before := counter.Snapshot()
	cfg := loadgen.Config{RunID: runID + "p", Clients: wl.Plan(), Work: wl.Work}
	for i := range cfg.Clients {
		cfg.Clients[i].Process = 0
	}
	loadgen.Run(ctx, lim, cfg, col.Add)
	counts := counter.Snapshot().Sub(before)
	stop()
	s := metrics.Summarize(col.Executions(), wl.Planned(), wl.Limit, 0)
	l = report.NewLoad("polling", s, counts, info.done(ctx), col.Failures())
	l.SetRedisUsec(info.usec)
	l.SetRedisCPU(info.cpu)
	l.RoundTripsPerQueuedAdmission, l.FastAdmissions = 0, l.Admitted
	return l, info.cpuNote(), nil
}

// infoDiff takes INFO commandstats and INFO cpu before and after a run
// (real Redis only).
type infoDiff struct {
	rdb *redis.Client
	// statsOK says INFO commandstats was read before the run.
	statsOK          bool
	before, usecBase redisstats.CommandStats
	// usec is the microseconds Redis spent in commands over the run, set by done.
	usec int64
	// cpuBase is the server's CPU time (µs) before the run; cpuErr says why
	// it is unknown (miniredis, or INFO cpu unreadable).
	cpuBase int64
	cpuErr  error
	// cpu is the server's CPU time (µs) over the run, set by done.
	cpu int64
}

// errNoCPU: miniredis has no INFO cpu.
var errNoCPU = errors.New("miniredis has no INFO cpu")

func newInfoDiff(ctx context.Context, rdb *redis.Client, e *env) *infoDiff {
	if e.miniredis {
		return &infoDiff{cpuErr: errNoCPU}
	}
	d := &infoDiff{rdb: rdb}
	before, usec, err := redisstats.ReadCommandStats(ctx, rdb)
	if err == nil {
		d.statsOK, d.before, d.usecBase = true, before, usec
	}
	// Read last, so that the CPU time of the INFO commandstats above is not the run's.
	d.cpuBase, d.cpuErr = redisstats.ReadCPU(ctx, rdb)
	return d
}

// done reads INFO cpu and INFO commandstats again; it sets usec and cpu and
// returns the commandstats difference (nil when unknown).
func (d *infoDiff) done(ctx context.Context) redisstats.CommandStats {
	if d.rdb == nil {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	if d.cpuErr == nil {
		// Read first, so that the CPU time of the INFO commandstats below is not the run's.
		var after int64
		if after, d.cpuErr = redisstats.ReadCPU(ctx, d.rdb); d.cpuErr == nil {
			d.cpu = after - d.cpuBase
		}
	}
	if !d.statsOK {
		return nil
	}
	after, usec, err := redisstats.ReadCommandStats(ctx, d.rdb)
	if err != nil {
		return nil
	}
	diff := after.Sub(d.before)
	delete(diff, "info") // the bench's own INFO
	u := usec.Sub(d.usecBase)
	delete(u, "info")
	d.usec = u.Total()
	return diff
}

// cpuNote says why redis_cpu_us_per_admission is missing ("" when it is not).
func (d *infoDiff) cpuNote() string {
	switch {
	case errors.Is(d.cpuErr, errNoCPU):
		return "miniredis has no INFO cpu: redis_cpu_us_per_admission needs --redis"
	case d.cpuErr != nil:
		return fmt.Sprintf("redis_cpu_us_per_admission left out: %v", d.cpuErr)
	}
	return ""
}

// startProgress draws a progress bar on stderr while done() < total, when
// mode is "on", or "auto" and stderr is a terminal. The returned func stops it.
func startProgress(stderr io.Writer, mode, label string, total int, done func() int) (stop func()) {
	if mode == "off" || (mode == "auto" && !isTerminal(stderr)) || total <= 0 {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	draw := func() {
		n := done()
		const width = 40
		filled := min(width, n*width/total)
		fmt.Fprintf(stderr, "\r%-8s [%s%s] %d/%d", label, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), n, total)
	}
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				draw()
				fmt.Fprintln(stderr)
				return
			case <-t.C:
				draw()
			}
		}
	})
	return sync.OnceFunc(func() { close(quit); wg.Wait() })
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/coordinator"
)

// runCrash runs the workload in f.Workload.Processes children, SIGKILLs the
// last one once f.KillAfter of the executions finished (while it holds slots,
// or, with --kill-when waiting, after pausing every action until it only
// waits), and then checks from Redis how long its held slots and its queued
// waiters took to go, and that every survivor's execution finished.
func runCrash(ctx context.Context, f *Flags, e *env, stderr io.Writer) (*report.Report, error) {
	wl := f.Workload
	r := e.newReport("crash")
	r.Workload = &wl
	rdb, _, err := loadgen.Connect(e.url, 32)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	defer e.cleanup(rdb)
	// The parent sweeps too, so that the dead process's leftovers are found
	// even after every survivor has finished.
	c, closeC, err := loadgen.NewCoordinator(ctx, rdb, nil, f.coordinatorOptions(e.prefix))
	if err != nil {
		return nil, err
	}
	defer closeC()
	if err := setLimits(ctx, c, wl.Refs(), wl.Limit); err != nil {
		return nil, err
	}
	victim := wl.Processes - 1
	cr := &report.Crash{Victim: victim, KillWhen: f.KillWhen, LeaseTTLS: f.LeaseTTL.Seconds(),
		AckTimeoutS: f.AckTimeout.Seconds(), SweepIntervalS: f.SweepInterval.Seconds()}
	r.Crash = cr

	col := loadgen.NewCollector()
	stop := startProgress(stderr, f.Progress, "crash", wl.Planned(), col.Progress)
	defer stop()
	children, err := startChildren(ctx, f, e, col)
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	killAll := func() {
		for _, ch := range children {
			_ = ch.Kill()
		}
	}
	threshold := int(f.KillAfter * float64(wl.Planned()))
	if !waitFor(ctx, 60*time.Second, func() bool { return col.Progress() >= threshold }) {
		killAll()
		return nil, fmt.Errorf("crash: %d of %d executions finished before the kill point", col.Progress(), threshold)
	}
	paused := false
	if f.KillWhen == "waiting" {
		if err := setLimits(ctx, c, wl.Refs(), 0); err != nil {
			killAll()
			return nil, err
		}
		paused = true
	}
	ok := waitFor(ctx, 10*time.Second, func() bool {
		holding, waiting := col.InFlight(victim)
		if f.KillWhen == "holding" {
			return len(holding) > 0
		}
		if len(holding) > 0 || len(waiting) == 0 {
			return false
		}
		// The events lag behind Redis (a grant not yet reported, a release
		// not yet sent), so ask Redis too. While every action is paused no
		// new grant can make the victim a holder again.
		held, _, err := classify(ctx, c, col.Executions(), victim, time.Now())
		if err != nil || len(held) > 0 {
			time.Sleep(10 * time.Millisecond)
			return false
		}
		return true
	})
	if !ok {
		r.Notes = append(r.Notes, "the victim never reached the --kill-when state within 10s; killed anyway")
	}
	vch := children[victim]
	if err := vch.Kill(); err != nil {
		killAll()
		return nil, err
	}
	killedAt := time.Now()
	cr.KilledAtS = killedAt.Sub(begin).Seconds()
	<-vch.Exited() // every event it wrote has been read
	held, waiting, err := classify(ctx, c, col.Executions(), victim, killedAt)
	if err != nil {
		killAll()
		return nil, err
	}
	cr.VictimHolding, cr.VictimWaiting = len(held), len(waiting)
	if paused {
		if err := setLimits(ctx, c, wl.Refs(), wl.Limit); err != nil {
			killAll()
			return nil, err
		}
	}

	margin := 250*time.Millisecond + f.SweepInterval
	heldBound := f.LeaseTTL + margin
	waiterBound := f.LeaseTTL + f.AckTimeout + margin
	cr.HeldBoundS, cr.WaiterBoundS = heldBound.Seconds(), waiterBound.Seconds()
	heldGone, waitGone := make(chan time.Duration, 1), make(chan time.Duration, 1)
	go func() { heldGone <- untilGone(ctx, c, held, killedAt, heldBound+5*time.Second) }()
	go func() { waitGone <- untilGone(ctx, c, waiting, killedAt, waiterBound+5*time.Second) }()

	for p, ch := range children {
		if p == victim {
			continue
		}
		if err := ch.Wait(ctx); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("child %d: %v", p, err))
		}
	}
	stop()
	hd, wd := <-heldGone, <-waitGone
	cr.HeldRecoveryS, cr.WaiterRecoveryS = hd.Seconds(), wd.Seconds()
	cr.WithinBounds = hd >= 0 && wd >= 0 && hd <= heldBound && wd <= waiterBound

	for _, ref := range wl.Refs() {
		st, err := c.QueueStats(ctx, ref)
		if err != nil {
			return nil, err
		}
		cr.Reclaimed += st.TotalReclaimed
		cr.Abandoned += st.TotalAbandoned
	}

	all := col.Executions()
	survivors := col.Executions(victim)
	planned := 0
	for p := range wl.Processes {
		if p != victim {
			for _, cl := range wl.ClientsOf(p) {
				planned += cl.Count
			}
		}
	}
	s := metrics.Summarize(survivors, planned, wl.Limit, 0)
	// The promises are checked over every process: the victim's open
	// executions ran until the kill.
	whole := metrics.Summarize(all, wl.Planned(), wl.Limit, killedAt.UnixNano())
	s.MaxConcurrency, s.LimitViolations, s.FIFOInversions = whole.MaxConcurrency, whole.LimitViolations, whole.FIFOInversions
	r.Load = report.NewLoad("baton (survivors)", s, col.Counts(), nil, col.Failures())
	cr.SurvivorsLost = s.Lost
	r.Failed = broken(r.Load)
	if !cr.WithinBounds {
		r.Failed = append(r.Failed, "recovery out of bounds")
	}
	r.Notes = append(r.Notes, "latency and throughput figures of a crash run include the recovery; compare them with care",
		"redis_cmds_per_admission counts the survivors' commands only")
	return r, nil
}

// classify asks Redis where each of the victim's unfinished executions stands
// just after the kill: holding a slot (running, granted or not yet
// acknowledged) or waiting. An execution that ended less than a second before
// the kill may not have been released yet, so it is asked about too.
func classify(ctx context.Context, c *coordinator.Coordinator, execs []metrics.Execution, victim int, killedAt time.Time) (held, waiting []metrics.Execution, err error) {
	recent := killedAt.Add(-time.Second).UnixNano()
	for _, e := range execs {
		if e.Process != victim || e.Submit == 0 || (e.End != 0 && e.End < recent) {
			continue
		}
		st, err := c.ExecutionState(ctx, e.Action, e.ID)
		if err != nil {
			return nil, nil, err
		}
		switch st.Status {
		case coordinator.StatusRunning:
			held = append(held, e)
		case coordinator.StatusWaiting:
			waiting = append(waiting, e)
		}
	}
	return held, waiting, nil
}

// untilGone polls until none of execs is running or waiting any more and
// returns the time from the kill; -1 if some remain after limit.
func untilGone(ctx context.Context, c *coordinator.Coordinator, execs []metrics.Execution, killedAt time.Time, limit time.Duration) time.Duration {
	if len(execs) == 0 {
		return 0
	}
	left := execs
	for time.Since(killedAt) < limit && ctx.Err() == nil {
		var still []metrics.Execution
		for _, e := range left {
			st, err := c.ExecutionState(ctx, e.Action, e.ID)
			if err != nil || st.Status != coordinator.StatusUnknown {
				still = append(still, e)
			}
		}
		if left = still; len(left) == 0 {
			return time.Since(killedAt)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(left) == 0 {
		return time.Since(killedAt)
	}
	return -1
}

// waitFor polls cond every millisecond for up to d.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return cond()
}

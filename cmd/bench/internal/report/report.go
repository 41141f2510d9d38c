// Package report holds the bench's result: one JSON object (--json) or a
// short human table, with the same figures.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/batonhq/baton/cmd/bench/internal/calibrate"
	"github.com/batonhq/baton/cmd/bench/internal/ratecheck"
	"github.com/batonhq/baton/cmd/bench/internal/workload"
)

// Report is the result of one bench run. Fields of other modes are omitted.
type Report struct {
	// Mode is throughput, memory, sweep, crash, throttle or quota.
	Mode string `json:"mode"`
	// Target says what was measured: a Redis version and address, or miniredis.
	Target       string `json:"target"`
	RedisVersion string `json:"redis_version,omitempty"`
	// Miniredis is true when the figures are not Redis figures.
	Miniredis bool `json:"miniredis"`
	// Workload is the workload of throughput and crash runs.
	Workload *workload.Workload `json:"workload,omitempty"`

	// Load holds Baton's figures (throughput, crash); its fields are
	// top-level in the JSON.
	*Load

	// Calibration is the same-run PING and EVALSHA rate; CeilingAdmissionsPerS
	// is its EVALSHA/s divided by RedisCmdsPerAdmission, and Efficiency
	// AdmittedPerS divided by that ceiling.
	Calibration           *calibrate.Result `json:"calibration,omitempty"`
	CeilingAdmissionsPerS float64           `json:"ceiling_admissions_per_s,omitempty"`
	Efficiency            float64           `json:"efficiency,omitempty"`
	// WorkBoundAdmissionsPerS is actions x limit / mean work: what the
	// workload allows even with an infinitely fast coordinator.
	WorkBoundAdmissionsPerS float64 `json:"work_bound_admissions_per_s,omitempty"`

	// ViaHTTP holds the figures of the same workload admitted through the
	// daemon's HTTP API (--via http).
	ViaHTTP *Load `json:"via_http,omitempty"`
	// Baseline holds the polling limiter's figures (--baseline polling).
	Baseline *Load `json:"baseline_polling,omitempty"`

	// Memory, Sweep and Crash hold the figures of those modes.
	Memory *Memory `json:"memory,omitempty"`
	Sweep  *Sweep  `json:"sweep,omitempty"`
	Crash  *Crash  `json:"crash,omitempty"`
	// Throttle and Quota hold the figures of those modes.
	Throttle *Throttle `json:"throttle,omitempty"`
	Quota    *Quota    `json:"quota,omitempty"`

	// Masters are a cluster run's per-master figures; BusiestOverMean is the
	// busiest master's Redis CPU over the masters' mean.
	Masters         []MasterCPU `json:"masters,omitempty"`
	BusiestOverMean float64     `json:"busiest_over_mean,omitempty"`

	// Failed lists the promises broken in this run; the exit code is non-zero when it is not empty.
	Failed []string `json:"failed,omitempty"`
	// Notes say what a reader must know to read the figures.
	Notes []string `json:"notes,omitempty"`
}

// Load is what one load run measured (Baton or the polling baseline).
type Load struct {
	// Limiter names what was measured ("baton", "polling").
	Limiter string `json:"limiter"`
	// The figures of metrics.Summary, in milliseconds and seconds.
	AdmittedPerS       float64 `json:"admitted_per_s"`
	WaitP50Ms          float64 `json:"wait_p50_ms"`
	WaitP99Ms          float64 `json:"wait_p99_ms"`
	HandoffP50Ms       float64 `json:"handoff_p50_ms"`
	HandoffP99Ms       float64 `json:"handoff_p99_ms"`
	Handoffs           int     `json:"handoffs"`
	MaxConcurrencySeen int     `json:"max_concurrency_seen"`
	LimitViolations    int     `json:"limit_violations"`
	FIFOInversions     int64   `json:"fifo_inversions"`
	Lost               int     `json:"lost"`
	Planned            int     `json:"planned"`
	Admitted           int     `json:"admitted"`
	Finished           int     `json:"finished"`
	WallS              float64 `json:"wall_s"`

	// HTTPCallsPerAdmission counts HTTP calls per admission (--via http:
	// acquire polls and the release).
	HTTPCallsPerAdmission float64 `json:"http_calls_per_admission,omitempty"`

	// RedisCmdsPerAdmission counts the commands clients sent per admission,
	// release included (client-side count; see package redisstats).
	RedisCmdsPerAdmission float64 `json:"redis_cmds_per_admission"`
	// RedisCPUUsPerAdmission is the Redis server's own CPU time over the run
	// (INFO cpu used_cpu_user + used_cpu_sys difference, microseconds) per
	// admission: commands plus network I/O, the event loop and cron, as the
	// peer harness measures it (real Redis only; 0: unknown). It counts
	// whatever else used that Redis meanwhile.
	// RedisServerCPUBoundAdmissionsPerS is 1e6 / RedisCPUUsPerAdmission: the
	// admission rate at which Redis would use one full CPU core.
	RedisCPUUsPerAdmission            float64 `json:"redis_cpu_us_per_admission,omitempty"`
	RedisServerCPUBoundAdmissionsPerS float64 `json:"redis_server_cpu_bound_admissions_per_s,omitempty"`
	// RoundTripsPerAdmission counts round trips per admission, release included.
	RoundTripsPerAdmission float64 `json:"round_trips_per_admission"`
	// FastAdmissions found a free slot (no grant to acknowledge); each took
	// one round trip by construction (the enqueue script).
	FastAdmissions int `json:"fast_admissions"`
	// RoundTripsPerQueuedAdmission charges every round trip that is neither
	// a release nor a fast admission's enqueue to the queued admissions:
	// enqueue, BLPOP, acknowledgement, and the amortised heartbeats, wake-ups,
	// sweep-index updates and policy checks.
	RoundTripsPerQueuedAdmission float64 `json:"round_trips_per_queued_admission,omitempty"`
	// CommandsPerAdmission breaks RedisCmdsPerAdmission down by command.
	CommandsPerAdmission map[string]float64 `json:"commands_per_admission,omitempty"`
	// RedisCallsPerAdmission is the INFO commandstats difference per
	// admission: client commands plus every redis.call inside scripts.
	RedisCallsPerAdmission float64 `json:"redis_calls_per_admission_incl_scripts,omitempty"`
	// RedisUsecPerAdmission is Redis's time in commands per admission (INFO
	// commandstats usec), and RedisCPUBoundAdmissionsPerS what one fully busy
	// Redis core would then sustain (command execution only: no network I/O).
	RedisUsecPerAdmission       float64 `json:"redis_usec_per_admission,omitempty"`
	RedisCPUBoundAdmissionsPerS float64 `json:"redis_cpu_bound_admissions_per_s,omitempty"`
	// Commandstats is the INFO commandstats difference over the run.
	Commandstats map[string]int64 `json:"commandstats,omitempty"`
	// Failures counts the errors clients saw, by message.
	Failures map[string]int `json:"failures,omitempty"`
}

// Memory is the result of --mode memory.
type Memory struct {
	// Queued is how many executions waited on the action, with IDBytes-long IDs.
	Queued  int `json:"queued"`
	IDBytes int `json:"id_bytes"`
	// UsedBefore and UsedAfter are INFO used_memory around the fill;
	// BytesPerQueued is their difference per queued execution; FillS the
	// fill's duration.
	UsedBefore     int64   `json:"used_memory_before"`
	UsedAfter      int64   `json:"used_memory_after"`
	BytesPerQueued float64 `json:"bytes_per_queued"`
	FillS          float64 `json:"fill_s"`
	// Enqueue1000Ms is how long 1,000 concurrent EnqueueAndWait calls on one
	// action took until all 1,000 were in the queue.
	Enqueue1000Ms float64 `json:"enqueue_1000_ms"`
	// KeyBytes is MEMORY USAGE of each per-action key after the fill, and
	// KeyBytesPerQueued their sum per queued execution (a cross-check of
	// BytesPerQueued that leaves out allocator and dictionary overheads
	// outside the keys).
	KeyBytes          map[string]int64 `json:"key_bytes,omitempty"`
	KeyBytesPerQueued float64          `json:"key_bytes_per_queued,omitempty"`
}

// Sweep is the result of --mode sweep.
type Sweep struct {
	// IdleActions and Queued size the fixture; FillS is how long it took.
	IdleActions int     `json:"idle_actions"`
	Queued      int     `json:"queued"`
	FillS       float64 `json:"fill_s"`
	// IdleMs are the durations of passes with nothing due.
	IdleMs []float64 `json:"idle_pass_ms"`
	// DueMs are the durations of passes with Due actions due.
	DueMs []float64 `json:"due_pass_ms"`
	// Due is the number of actions due in each due pass.
	Due int `json:"due_actions"`
	// DueVisited, DueReclaimed and DueGranted are what the due passes did, summed.
	DueVisited   int `json:"due_visited"`
	DueReclaimed int `json:"due_reclaimed"`
	DueGranted   int `json:"due_granted"`
}

// Crash is the result of --mode crash.
type Crash struct {
	// Victim is the killed process, KillWhen its state (holding, waiting),
	// KilledAtS when it was killed (from the start), VictimHolding and
	// VictimWaiting what Redis held of it just after.
	Victim        int     `json:"victim_process"`
	KillWhen      string  `json:"kill_when"`
	KilledAtS     float64 `json:"killed_at_s"`
	VictimHolding int     `json:"victim_holding"`
	VictimWaiting int     `json:"victim_waiting"`
	// HeldRecoveryS and WaiterRecoveryS are how long after the kill its held
	// slots and its waiters were gone from Redis; the Bound fields are the
	// limits they are checked against (WithinBounds).
	HeldRecoveryS   float64 `json:"held_slots_recovery_s"`
	HeldBoundS      float64 `json:"held_slots_bound_s"`
	WaiterRecoveryS float64 `json:"dead_waiters_recovery_s"`
	WaiterBoundS    float64 `json:"dead_waiters_bound_s"`
	WithinBounds    bool    `json:"within_bounds"`
	// Reclaimed and Abandoned sum QueueStats over the actions; SurvivorsLost
	// counts survivors' executions that never finished.
	Reclaimed     int64 `json:"reclaimed"`
	Abandoned     int64 `json:"abandoned"`
	SurvivorsLost int   `json:"survivors_lost"`
	// LeaseTTLS, AckTimeoutS and SweepIntervalS are the Coordinator settings.
	LeaseTTLS      float64 `json:"lease_ttl_s"`
	AckTimeoutS    float64 `json:"ack_timeout_s"`
	SweepIntervalS float64 `json:"sweep_interval_s"`
}

// Throttle is the result of --mode throttle: the same workload without a
// rate and with one, in one run.
type Throttle struct {
	// Rate and Burst are the rate of the throttled phase.
	Rate  string `json:"rate"`
	Burst int    `json:"burst"`
	// Phases are the unthrottled and the throttled run.
	Phases []RateCost `json:"phases"`
	// ExcessAdmissions is the most admissions over limit*T/per +
	// max(burst, 1) in any interval T of the throttled run (0: the bound
	// held everywhere); AdmissionsOverBound counts admissions that end such
	// an interval.
	ExcessAdmissions    int `json:"excess_admissions"`
	AdmissionsOverBound int `json:"admissions_over_bound"`
	// ExpectedSpacingMs is per/limit; MeanSpacingMs the measured mean gap
	// between admissions of an action once its burst was used (Gaps gaps),
	// SpacingRatio their quotient (1: exact), P50SpacingMs each action's
	// median gap and WorstP99SpacingMs the largest 99th percentile.
	ExpectedSpacingMs float64   `json:"expected_spacing_ms"`
	MeanSpacingMs     float64   `json:"mean_spacing_ms"`
	SpacingRatio      float64   `json:"spacing_ratio"`
	Gaps              int       `json:"gaps"`
	P50SpacingMs      []float64 `json:"p50_spacing_ms"`
	WorstP99SpacingMs float64   `json:"worst_p99_spacing_ms"`
	// FIFOInversions counts admissions out of enqueue order, both phases.
	FIFOInversions int `json:"fifo_inversions"`
	// Extra* are the throttled phase's figures minus the unthrottled one's,
	// per admission: what a throttled admission costs over an unthrottled one.
	ExtraCmdsPerAdmission       float64 `json:"extra_cmds_per_admission"`
	ExtraRoundTripsPerAdmission float64 `json:"extra_round_trips_per_admission"`
	ExtraRedisCPUUsPerAdmission float64 `json:"extra_redis_cpu_us_per_admission,omitempty"`
	// IdleRedisCPUUsPerS is Redis's CPU per second with no load, measured first.
	IdleRedisCPUUsPerS float64 `json:"idle_redis_cpu_us_per_s,omitempty"`
	// Failures counts the errors clients saw, by message.
	Failures map[string]int `json:"failures,omitempty"`
}

// RateCost is what one phase of the throttle mode cost.
type RateCost struct {
	Phase        string  `json:"phase"`
	Admissions   int     `json:"admissions"`
	WallS        float64 `json:"wall_s"`
	AdmittedPerS float64 `json:"admitted_per_s"`
	// Throttled sums QueueStats.TotalThrottled over the phase's actions.
	Throttled int64 `json:"throttled"`
	// CmdsPerAdmission and RoundTripsPerAdmission are client-side counts,
	// release included; CommandsPerAdmission breaks them down.
	CmdsPerAdmission       float64            `json:"cmds_per_admission"`
	RoundTripsPerAdmission float64            `json:"round_trips_per_admission"`
	CommandsPerAdmission   map[string]float64 `json:"commands_per_admission,omitempty"`
	// RedisCPUUsPerAdmission is the INFO cpu difference per admission;
	// ...NetOfIdle subtracts the idle rate times the wall time.
	RedisCPUUsPerAdmission          float64 `json:"redis_cpu_us_per_admission,omitempty"`
	RedisCPUUsPerAdmissionNetOfIdle float64 `json:"redis_cpu_us_per_admission_net,omitempty"`
}

// Quota is the result of --mode quota.
type Quota struct {
	Quota     string  `json:"quota"`
	DurationS float64 `json:"duration_s"`
	// Accepted and Rejected count the requests; QuotaRejectedCounted is
	// QueueStats.TotalQuotaRejected summed (a cross-check).
	Accepted             int   `json:"accepted"`
	Rejected             int   `json:"rejected"`
	QuotaRejectedCounted int64 `json:"quota_rejected_counted"`
	// Windows are the counts by action and window; Exact, Over, Early and
	// Short sort them (see ratecheck.QuotaVerdict).
	Windows []ratecheck.WindowCount `json:"windows"`
	Exact   int                     `json:"windows_exact"`
	Over    int                     `json:"windows_over"`
	Early   int                     `json:"windows_refused_early"`
	Short   int                     `json:"windows_short"`
	// Failures counts the errors clients saw, by message.
	Failures map[string]int `json:"failures,omitempty"`
}

// WriteJSON writes r as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "baton bench: mode %s against %s\n", r.Mode, r.Target)
	if r.Workload != nil {
		wl := r.Workload
		fmt.Fprintf(tw, "workload: --actions %d --limit %d --executions %d --clients %d --work %s --processes %d\n",
			wl.Actions, wl.Limit, wl.Executions, wl.Clients, wl.Work, wl.Processes)
	}
	fmt.Fprintln(tw)
	if r.Load != nil {
		cols := []*Load{r.Load}
		if r.ViaHTTP != nil {
			cols = append(cols, r.ViaHTTP)
		}
		if r.Baseline != nil {
			cols = append(cols, r.Baseline)
		}
		writeLoads(tw, cols)
		if r.Calibration != nil {
			c := r.Calibration
			fmt.Fprintf(tw, "\ncalibration (%d clients)\tPING %.0f/s\tEVALSHA %.0f/s\n", c.Clients, c.PingPerS, c.EvalshaPerS)
			fmt.Fprintf(tw, "ceiling_admissions_per_s\t%.0f\t(EVALSHA/s / cmds per admission)\n", r.CeilingAdmissionsPerS)
			fmt.Fprintf(tw, "efficiency\t%.2f\t(admitted_per_s / ceiling)\n", r.Efficiency)
		}
		if r.WorkBoundAdmissionsPerS > 0 {
			fmt.Fprintf(tw, "work_bound_admissions_per_s\t%.0f\t(actions x limit / mean work)\n", r.WorkBoundAdmissionsPerS)
		}
	}
	if len(r.Masters) > 0 {
		fmt.Fprintf(tw, "\nmaster\tactions\tredis_cpu_us\tus_per_admission\tshare\n")
		for _, m := range r.Masters {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.2f\n", m.Addr, m.Actions, m.CPUUs, m.CPUUsPerAdmission, m.Share)
		}
		fmt.Fprintf(tw, "busiest_over_mean\t%.2f\t(busiest master's Redis CPU / the masters' mean)\n", r.BusiestOverMean)
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(tw, "queued\t%d\t(%d-byte IDs, filled in %.2fs)\n", m.Queued, m.IDBytes, m.FillS)
		fmt.Fprintf(tw, "used_memory\t%d -> %d\n", m.UsedBefore, m.UsedAfter)
		fmt.Fprintf(tw, "bytes_per_queued\t%.1f\t(target <= 150; INFO used_memory difference)\n", m.BytesPerQueued)
		fmt.Fprintf(tw, "key_bytes_per_queued\t%.1f\t(MEMORY USAGE of the action's keys)\n", m.KeyBytesPerQueued)
		for _, k := range slices.Sorted(maps.Keys(m.KeyBytes)) {
			fmt.Fprintf(tw, "  MEMORY USAGE %s\t%d\n", k, m.KeyBytes[k])
		}
		fmt.Fprintf(tw, "enqueue_1000_ms\t%.1f\t(1,000 concurrent EnqueueAndWait on one action, until all queued)\n", m.Enqueue1000Ms)
	}
	if s := r.Sweep; s != nil {
		fmt.Fprintf(tw, "fixture\t%d idle actions, %d queued, filled in %.1fs\n", s.IdleActions, s.Queued, s.FillS)
		fmt.Fprintf(tw, "pass, nothing due (ms)\t%s\n", floats(s.IdleMs))
		fmt.Fprintf(tw, "pass, %d due (ms)\t%s\t(visited %d, reclaimed %d, granted %d)\n", s.Due, floats(s.DueMs), s.DueVisited, s.DueReclaimed, s.DueGranted)
	}
	if c := r.Crash; c != nil {
		fmt.Fprintf(tw, "\nkilled process %d at %.2fs (%s): it held %d slots and had %d waiters\n", c.Victim, c.KilledAtS, c.KillWhen, c.VictimHolding, c.VictimWaiting)
		fmt.Fprintf(tw, "held slots back after\t%.2fs\t(bound %.2fs: lease TTL + sweep interval + margin)\n", c.HeldRecoveryS, c.HeldBoundS)
		fmt.Fprintf(tw, "dead waiters gone after\t%.2fs\t(bound %.2fs: lease TTL + ack timeout + sweep interval + margin)\n", c.WaiterRecoveryS, c.WaiterBoundS)
		fmt.Fprintf(tw, "within bounds\t%v\treclaimed %d, abandoned %d, survivors lost %d\n", c.WithinBounds, c.Reclaimed, c.Abandoned, c.SurvivorsLost)
	}
	if t := r.Throttle; t != nil {
		writeThrottle(tw, t)
	}
	if q := r.Quota; q != nil {
		fmt.Fprintf(tw, "quota\t%s per action\t(%.1fs)\n", q.Quota, q.DurationS)
		fmt.Fprintf(tw, "requests\t%d accepted, %d refused\t(QueueStats counted %d refused)\n", q.Accepted, q.Rejected, q.QuotaRejectedCounted)
		fmt.Fprintf(tw, "windows\t%d exact, %d over, %d refused early, %d short\n", q.Exact, q.Over, q.Early, q.Short)
		for _, w := range q.Windows {
			fmt.Fprintf(tw, "  %s %s\t%d accepted, %d refused\n", w.Action, w.Start.UTC().Format("15:04:05"), w.Accepted, w.Rejected)
		}
		for msg, n := range q.Failures {
			fmt.Fprintf(tw, "errors: %d x %s\n", n, msg)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "\nnote: %s", n)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(tw)
	}
	if len(r.Failed) > 0 {
		fmt.Fprintf(tw, "\nFAILED: %s\n", strings.Join(r.Failed, "; "))
	}
	return tw.Flush()
}

func writeLoads(tw io.Writer, cols []*Load) {
	row := func(name string, f func(l *Load) string) {
		fmt.Fprintf(tw, "%s", name)
		for _, l := range cols {
			fmt.Fprintf(tw, "\t%s", f(l))
		}
		fmt.Fprintln(tw)
	}
	row("", func(l *Load) string { return l.Limiter })
	row("admitted_per_s", func(l *Load) string { return fmt.Sprintf("%.0f", l.AdmittedPerS) })
	row("wait_p50_ms / p99", func(l *Load) string { return fmt.Sprintf("%.2f / %.2f", l.WaitP50Ms, l.WaitP99Ms) })
	row("handoff_p50_ms / p99", func(l *Load) string { return fmt.Sprintf("%.2f / %.2f", l.HandoffP50Ms, l.HandoffP99Ms) })
	row("handoffs", func(l *Load) string { return fmt.Sprint(l.Handoffs) })
	row("max_concurrency_seen", func(l *Load) string { return fmt.Sprint(l.MaxConcurrencySeen) })
	row("limit_violations", func(l *Load) string { return fmt.Sprint(l.LimitViolations) })
	row("fifo_inversions", func(l *Load) string { return fmt.Sprint(l.FIFOInversions) })
	row("lost", func(l *Load) string { return fmt.Sprintf("%d of %d", l.Lost, l.Planned) })
	row("redis_cmds_per_admission", func(l *Load) string { return fmt.Sprintf("%.2f", l.RedisCmdsPerAdmission) })
	row("redis_cpu_us_per_admission", func(l *Load) string {
		if l.RedisCPUUsPerAdmission == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f (one core: %.0f/s)", l.RedisCPUUsPerAdmission, l.RedisServerCPUBoundAdmissionsPerS)
	})
	row("round_trips_per_admission", func(l *Load) string { return fmt.Sprintf("%.2f", l.RoundTripsPerAdmission) })
	row("  queued admission (excl. release)", func(l *Load) string {
		if l.FastAdmissions == l.Admitted {
			return "-"
		}
		return fmt.Sprintf("%.2f (fast: 1, %d of %d)", l.RoundTripsPerQueuedAdmission, l.FastAdmissions, l.Admitted)
	})
	row("redis calls incl. scripts", func(l *Load) string {
		if l.RedisCallsPerAdmission == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", l.RedisCallsPerAdmission)
	})
	row("redis usec in commands per admission", func(l *Load) string {
		if l.RedisUsecPerAdmission == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f (one core: %.0f/s)", l.RedisUsecPerAdmission, l.RedisCPUBoundAdmissionsPerS)
	})
	row("wall_s", func(l *Load) string { return fmt.Sprintf("%.2f", l.WallS) })
	for _, l := range cols {
		if len(l.CommandsPerAdmission) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(l.CommandsPerAdmission)) {
				parts = append(parts, fmt.Sprintf("%s %.2f", k, l.CommandsPerAdmission[k]))
			}
			fmt.Fprintf(tw, "%s commands per admission: %s\n", l.Limiter, strings.Join(parts, ", "))
		}
		for msg, n := range l.Failures {
			fmt.Fprintf(tw, "%s errors: %d x %s\n", l.Limiter, n, msg)
		}
	}
}

func writeThrottle(tw io.Writer, t *Throttle) {
	fmt.Fprintf(tw, "rate\t%s burst %d\n\n", t.Rate, t.Burst)
	fmt.Fprint(tw, "phase")
	for _, p := range t.Phases {
		fmt.Fprintf(tw, "\t%s", p.Phase)
	}
	fmt.Fprintln(tw)
	row := func(name string, f func(p RateCost) string) {
		fmt.Fprint(tw, name)
		for _, p := range t.Phases {
			fmt.Fprintf(tw, "\t%s", f(p))
		}
		fmt.Fprintln(tw)
	}
	row("admissions", func(p RateCost) string { return fmt.Sprint(p.Admissions) })
	row("admitted_per_s", func(p RateCost) string { return fmt.Sprintf("%.0f", p.AdmittedPerS) })
	row("throttled (QueueStats)", func(p RateCost) string { return fmt.Sprint(p.Throttled) })
	row("cmds_per_admission", func(p RateCost) string { return fmt.Sprintf("%.2f", p.CmdsPerAdmission) })
	row("round_trips_per_admission", func(p RateCost) string { return fmt.Sprintf("%.2f", p.RoundTripsPerAdmission) })
	row("redis_cpu_us_per_admission", func(p RateCost) string {
		if p.RedisCPUUsPerAdmission == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f (net of idle %.1f)", p.RedisCPUUsPerAdmission, p.RedisCPUUsPerAdmissionNetOfIdle)
	})
	row("wall_s", func(p RateCost) string { return fmt.Sprintf("%.2f", p.WallS) })
	for _, p := range t.Phases {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(p.CommandsPerAdmission)) {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, p.CommandsPerAdmission[k]))
		}
		fmt.Fprintf(tw, "%s commands per admission: %s\n", p.Phase, strings.Join(parts, ", "))
	}
	fmt.Fprintf(tw, "\nthrottled - unthrottled, per admission\t%+.2f commands, %+.2f round trips", t.ExtraCmdsPerAdmission, t.ExtraRoundTripsPerAdmission)
	if t.ExtraRedisCPUUsPerAdmission != 0 {
		fmt.Fprintf(tw, ", %+.1f µs Redis CPU (net of idle %.0f µs/s)", t.ExtraRedisCPUUsPerAdmission, t.IdleRedisCPUUsPerS)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "excess_admissions\t%d\t(over limit*T/per + max(burst, 1), any interval; %d admissions end one)\n", t.ExcessAdmissions, t.AdmissionsOverBound)
	fmt.Fprintf(tw, "spacing\tmean %.3f ms, expected %.3f ms (ratio %.4f), worst p99 %.3f ms, over %d gaps\n",
		t.MeanSpacingMs, t.ExpectedSpacingMs, t.SpacingRatio, t.WorstP99SpacingMs, t.Gaps)
	fmt.Fprintf(tw, "fifo_inversions\t%d\n", t.FIFOInversions)
	for msg, n := range t.Failures {
		fmt.Fprintf(tw, "errors: %d x %s\n", n, msg)
	}
}

func floats(v []float64) string {
	parts := make([]string, len(v))
	for i, f := range v {
		parts[i] = fmt.Sprintf("%.2f", f)
	}
	return strings.Join(parts, " ")
}

// MasterCPU is one cluster master's share of a run.
type MasterCPU struct {
	// Addr is the master's host:port.
	Addr string `json:"addr"`
	// Actions counts the workload's actions whose slot it serves.
	Actions int `json:"actions"`
	// CPUUs is its INFO cpu (user + sys) difference over the run, µs.
	CPUUs int64 `json:"cpu_us"`
	// CPUUsPerAdmission is CPUUs over all the run's admissions.
	CPUUsPerAdmission float64 `json:"cpu_us_per_admission"`
	// Share is CPUUs over the sum of every master's.
	Share float64 `json:"share"`
}

// SpreadOf builds the per-master figures from INFO cpu before and after,
// the actions each master serves and the run's admissions, sorted by address.
func SpreadOf(after, before map[string]int64, actions map[string]int, admitted int) []MasterCPU {
	var total int64
	for a, us := range after {
		total += us - before[a]
	}
	out := make([]MasterCPU, 0, len(after))
	for _, a := range slices.Sorted(maps.Keys(after)) {
		m := MasterCPU{Addr: a, Actions: actions[a], CPUUs: after[a] - before[a]}
		if admitted > 0 {
			m.CPUUsPerAdmission = float64(m.CPUUs) / float64(admitted)
		}
		if total > 0 {
			m.Share = float64(m.CPUUs) / float64(total)
		}
		out = append(out, m)
	}
	return out
}

// BusiestOverMean is the busiest master's CPU over the masters' mean (1:
// perfectly even; 0 when unknown).
func BusiestOverMean(ms []MasterCPU) float64 {
	if len(ms) == 0 {
		return 0
	}
	var sum, most int64
	for _, m := range ms {
		sum += m.CPUUs
		most = max(most, m.CPUUs)
	}
	if sum == 0 {
		return 0
	}
	return float64(most) / (float64(sum) / float64(len(ms)))
}

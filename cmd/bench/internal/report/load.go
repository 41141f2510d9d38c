package report

import (
	"strings"
	"time"

	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
)

// NewLoad turns a run's summary and Redis counts into a Load. client are the
// commands the bench processes sent; info is the INFO commandstats
// difference (nil when unavailable, as on miniredis).
func NewLoad(limiter string, s metrics.Summary, client redisstats.Counts, info redisstats.CommandStats, failures map[string]int) *Load {
	l := &Load{
		Limiter:            limiter,
		AdmittedPerS:       s.AdmittedPerS,
		WaitP50Ms:          ms(s.WaitP50),
		WaitP99Ms:          ms(s.WaitP99),
		HandoffP50Ms:       ms(s.HandoffP50),
		HandoffP99Ms:       ms(s.HandoffP99),
		Handoffs:           s.Handoffs,
		MaxConcurrencySeen: s.MaxConcurrency,
		LimitViolations:    s.LimitViolations,
		FIFOInversions:     s.FIFOInversions,
		Lost:               s.Lost,
		Planned:            s.Planned,
		Admitted:           s.Admitted,
		Finished:           s.Finished,
		WallS:              s.Wall.Seconds(),
		Failures:           failures,
	}
	if len(failures) == 0 {
		l.Failures = nil
	}
	if s.Admitted == 0 {
		return l
	}
	n := float64(s.Admitted)
	l.RedisCmdsPerAdmission = float64(client.Total()) / n
	l.RoundTripsPerAdmission = float64(client.RoundTrips) / n
	l.CommandsPerAdmission = map[string]float64{}
	for k, v := range client.Commands {
		l.CommandsPerAdmission[k] = float64(v) / n
	}
	l.FastAdmissions, l.RoundTripsPerQueuedAdmission = splitAdmissions(s.Admitted, client)
	if info != nil {
		l.Commandstats = info
		l.RedisCallsPerAdmission = float64(info.Total()) / n
	}
	return l
}

// splitAdmissions attributes round trips to the two kinds of admission.
// Every queued admission is delivered by one BLPOP reply that brings its
// grant's token (blpop:token; removals also bring tokens, rarely in a load
// run), so the rest were fast. Script calls share pipelines (the
// Coordinator batches concurrent calls), so each is charged the run's mean
// round trips per script call; BLPOPs and other commands one each. A fast
// admission costs its enqueue; releases are left out; everything else
// (queued admissions' enqueues, BLPOPs, heartbeats, sweeps, index writes)
// is charged to the queued admissions.
func splitAdmissions(admitted int, c redisstats.Counts) (fast int, perQueued float64) {
	queued := min(admitted, int(c.Commands["blpop:token"]))
	fast = max(0, admitted-queued)
	if queued == 0 {
		return fast, 0
	}
	var scripts int64
	for k, v := range c.Commands {
		if strings.HasPrefix(k, "script:") {
			scripts += v
		}
	}
	blpops := c.Commands["blpop"]
	other := c.Total() - scripts - blpops
	perScript := 1.0
	if scripts > 0 {
		perScript = float64(c.RoundTrips-blpops-other) / float64(scripts)
	}
	rest := float64(blpops+other) + perScript*float64(scripts-c.Commands["script:release"]-int64(fast))
	return fast, rest / float64(queued)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// SetRedisUsec records the microseconds Redis spent executing commands over
// the run (INFO commandstats usec, scripts included; 0: unknown) and the
// admission rate at which that work would keep one Redis core busy.
func (l *Load) SetRedisUsec(usec int64) {
	if usec <= 0 || l.Admitted == 0 {
		return
	}
	l.RedisUsecPerAdmission = float64(usec) / float64(l.Admitted)
	l.RedisCPUBoundAdmissionsPerS = 1e6 / l.RedisUsecPerAdmission
}

// SetRedisCPU records the Redis server's CPU time over the run, in
// microseconds (INFO cpu user + sys difference; 0 or less: unknown), per
// admission, and the admission rate at which Redis would use one full core.
func (l *Load) SetRedisCPU(us int64) {
	if us <= 0 || l.Admitted == 0 {
		return
	}
	l.RedisCPUUsPerAdmission = float64(us) / float64(l.Admitted)
	l.RedisServerCPUBoundAdmissionsPerS = 1e6 / l.RedisCPUUsPerAdmission
}

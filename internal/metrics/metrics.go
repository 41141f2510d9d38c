// Package metrics exports Baton's state to Prometheus. The per-action
// numbers are read from Redis at scrape time (QueueStats of every known
// action), so every daemon exports the same cluster-wide values and a
// restart loses nothing: counters and the wait-time histogram are the
// totals the scripts keep in Redis.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// Source is what the collector reads; *coordinator.Coordinator is one.
type Source interface {
	Actions(ctx context.Context, cursor uint64, count int64) ([]string, uint64, error)
	QueueStats(ctx context.Context, action string) (coordinator.QueueStats, error)
}

// MaxActions bounds the actions exported per scrape, so a runaway number of
// action refs cannot make a scrape unbounded.
const MaxActions = 10_000

// Metrics is the daemon's Prometheus registry.
type Metrics struct {
	// Registry holds every collector; serve it with Handler.
	Registry *prometheus.Registry
	// CompletionEvents counts completion events the listener handled, by
	// outcome (completion.Outcome's names: released, not_held, invalid,
	// failed).
	CompletionEvents *prometheus.CounterVec
}

// New returns a registry with the action collector, the completion-event
// counter and the Go runtime and process collectors.
func New(src Source, log *slog.Logger) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		CompletionEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_completion_events_total",
			Help: "Completion events handled by this daemon's listener, by outcome.",
		}, []string{"outcome"}),
	}
	m.Registry.MustRegister(NewCollector(src, log), m.CompletionEvents,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

var (
	labels = []string{"action"}

	descQueue   = prometheus.NewDesc("baton_queue_length", "Executions waiting.", labels, nil)
	descRunning = prometheus.NewDesc("baton_running", "Executions holding a slot with an unexpired lease.", labels, nil)
	descLimit   = prometheus.NewDesc("baton_limit", "Concurrency limit in force; -1 is unlimited.", labels, nil)
	descOldest  = prometheus.NewDesc("baton_oldest_waiting_seconds", "Age of the oldest waiting execution, by the daemon's clock; 0 when none waits.", labels, nil)

	descEnqueued  = prometheus.NewDesc("baton_enqueued_total", "Requests accepted into the queue or admitted at once.", labels, nil)
	descGrants    = prometheus.NewDesc("baton_grants_total", "Slots granted (fast path and handoff).", labels, nil)
	descCompleted = prometheus.NewDesc("baton_completions_total", "Slots freed by release or completion.", labels, nil)
	descTimeouts  = prometheus.NewDesc("baton_timeouts_total", "Waiters that reached the queue timeout.", labels, nil)
	descCancels   = prometheus.NewDesc("baton_cancels_total", "Waiters canceled.", labels, nil)
	descRejects   = prometheus.NewDesc("baton_rejections_total", "Requests refused because the queue was full.", labels, nil)
	descReclaims  = prometheus.NewDesc("baton_reclaims_total", "Slots reclaimed from expired leases and unacknowledged grants.", labels, nil)
	descAbandoned = prometheus.NewDesc("baton_abandoned_total", "Waiters dropped because their process was dead.", labels, nil)

	descThrottled     = prometheus.NewDesc("baton_throttled_total", "Executions that waited at the head of the queue for a rate token (each counted once).", labels, nil)
	descThrottleWait  = prometheus.NewDesc("baton_throttled_seconds", "How long the head of the queue still waits for its rate token (Redis clock, read by the daemon's); 0 when it does not wait for one.", labels, nil)
	descRate          = prometheus.NewDesc("baton_rate_limit_per_second", "Rate in force, in admissions per second (limit/per); absent when no rate applies.", labels, nil)
	descRateBurst     = prometheus.NewDesc("baton_rate_burst", "Burst of the rate in force; absent when no rate applies.", labels, nil)
	descQuotaLimit    = prometheus.NewDesc("baton_quota_limit", "Quota in force: executions accepted per window; absent when no quota applies.", []string{"action", "window"}, nil)
	descQuotaUsed     = prometheus.NewDesc("baton_quota_used", "Executions accepted in the current quota window (admitted, and waiting with a reservation); absent when no quota applies.", labels, nil)
	descQuotaRejected = prometheus.NewDesc("baton_quota_rejections_total", "Requests refused because the quota of the window was used up.", labels, nil)

	descWait = prometheus.NewDesc("baton_wait_seconds", "Time from enqueue to grant (Redis clock).", labels, nil)

	descUp = prometheus.NewDesc("baton_redis_up", "1 when Redis answered every read of the last scrape, else 0.", nil, nil)
)

// Collector reads QueueStats of every known action at scrape time.
type Collector struct {
	src     Source
	log     *slog.Logger
	timeout time.Duration

	mu     sync.Mutex
	warned map[string]bool // malformed members of the actions set already logged
}

// maxWarned bounds the malformed members remembered (and so logged once each).
const maxWarned = 1000

// NewCollector returns a Collector over src.
func NewCollector(src Source, log *slog.Logger) *Collector {
	return &Collector{src: src, log: log, timeout: 10 * time.Second, warned: map[string]bool{}}
}

// Describe sends every descriptor the collector uses.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descRunning, descLimit, descOldest, descEnqueued, descGrants,
		descCompleted, descTimeouts, descCancels, descRejects, descReclaims, descAbandoned, descThrottled, descThrottleWait,
		descRate, descRateBurst, descQuotaLimit, descQuotaUsed, descQuotaRejected, descWait, descUp} {
		ch <- d
	}
}

// Collect reads every known action's stats and sends its metrics. On a Redis
// error it sends what it could read and baton_redis_up 0. A member of the
// actions set that is not a valid action ref (written there by hand, or by
// another program) is skipped and logged once: it says nothing about Redis.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	refs, err := c.actions(ctx)
	up := 1.0
	if err != nil {
		up = 0
		c.log.Warn("metrics: listing actions", slog.Any("error", err))
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, ref := range refs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, err := c.src.QueueStats(ctx, ref)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, coordinator.ErrInvalidArgument) {
				c.skip(ref, "metrics: skipping a malformed member of the actions set", err)
				return
			}
			if errors.Is(err, coordinator.ErrKeySchema) {
				// Redis answered: a newer version of Baton keeps this action.
				c.skip(ref, "metrics: skipping an action a newer version of Baton keeps (upgrade this daemon)", err)
				return
			}
			if err != nil {
				up = 0
				c.log.Warn("metrics: reading stats", slog.String("action", ref), slog.Any("error", err))
				return
			}
			send(ch, st)
		}()
	}
	wg.Wait()
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
}

func (c *Collector) actions(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var cursor uint64
	for range MaxActions {
		refs, next, err := c.src.Actions(ctx, cursor, 500)
		if err != nil {
			return out, err
		}
		for _, r := range refs {
			if err := limits.ValidateRef(r); err != nil {
				c.skip(r, "metrics: skipping a malformed member of the actions set", err)
				continue
			}
			if !seen[r] && len(out) < MaxActions {
				seen[r] = true
				out = append(out, r)
			}
		}
		if cursor = next; cursor == 0 || len(out) >= MaxActions {
			break
		}
	}
	return out, nil
}

// skip logs an action it cannot report (a malformed member of the actions
// set, or one a newer version keeps), once per member.
func (c *Collector) skip(ref, why string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warned[ref] || len(c.warned) >= maxWarned {
		return
	}
	c.warned[ref] = true
	c.log.Warn(why, slog.String("member", limits.Quote(ref)), slog.Any("error", err))
}

func send(ch chan<- prometheus.Metric, st coordinator.QueueStats) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, st.Action)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), st.Action)
	}
	gauge(descQueue, float64(st.QueueLength))
	gauge(descRunning, float64(st.ActiveCount))
	gauge(descLimit, float64(st.MaxConcurrent))
	oldest := 0.0
	if !st.OldestEnqueuedAt.IsZero() {
		oldest = max(0, time.Since(st.OldestEnqueuedAt).Seconds())
	}
	gauge(descOldest, oldest)
	counter(descEnqueued, st.TotalEnqueued)
	counter(descGrants, st.TotalAdmitted)
	counter(descCompleted, st.TotalCompleted)
	counter(descTimeouts, st.TotalTimedOut)
	counter(descCancels, st.TotalCanceled)
	counter(descRejects, st.TotalRejected)
	counter(descReclaims, st.TotalReclaimed)
	counter(descAbandoned, st.TotalAbandoned)
	counter(descThrottled, st.TotalThrottled)
	counter(descQuotaRejected, st.TotalQuotaRejected)
	gauge(descThrottleWait, throttledSeconds(st, time.Now()))
	if !st.Rate.IsZero() {
		gauge(descRate, float64(st.Rate.Limit)/st.Rate.Per.Seconds())
		gauge(descRateBurst, float64(st.Rate.Burst))
	}
	if !st.Quota.IsZero() {
		ch <- prometheus.MustNewConstMetric(descQuotaLimit, prometheus.GaugeValue, float64(st.Quota.Limit), st.Action, st.Quota.Window.String())
		gauge(descQuotaUsed, float64(st.QuotaUsed))
	}
	ch <- waitHistogram(st)
}

// throttledSeconds is how long the head still waits for its rate token at
// now; 0 when it waits for none.
func throttledSeconds(st coordinator.QueueStats, now time.Time) float64 {
	if st.ThrottledUntil.IsZero() {
		return 0
	}
	return max(0, st.ThrottledUntil.Sub(now).Seconds())
}

// waitHistogram turns the scripts' non-cumulative buckets into Prometheus's
// cumulative ones.
func waitHistogram(st coordinator.QueueStats) prometheus.Metric {
	buckets := make(map[float64]uint64, len(coordinator.WaitBuckets))
	var cum uint64
	for i, bound := range coordinator.WaitBuckets {
		if i < len(st.Wait.Buckets) {
			cum += uint64(max(0, st.Wait.Buckets[i]))
		}
		buckets[bound.Seconds()] = cum
	}
	count := max(cum+uint64(max(0, st.Wait.Over)), uint64(max(0, st.Wait.Count)))
	return prometheus.MustNewConstHistogram(descWait, count, st.Wait.Sum.Seconds(), buckets, st.Action)
}

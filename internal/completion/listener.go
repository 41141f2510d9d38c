// Package completion is the daemon's consumer of completion events.
//
// Workers that finish an execution publish one entry on the stream
// coordinator.CompletedStream(prefix), with the fields action, execution and
// status (coordinator.PublishCompletion does it from Go). A Listener reads
// that stream in a Redis Streams consumer group shared by every daemon,
// frees each event's slot with the Coordinator's NotifyCompletion and
// acknowledges the event.
//
// Delivery is at least once: an entry whose consumer died before XACK is
// claimed by another consumer and applied again, which changes nothing,
// because freeing a slot that is no longer held is a no-op (NotHeld).
package completion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
)

// Coordinator is what a Listener needs of a *coordinator.Coordinator.
type Coordinator interface {
	// NotifyCompletion frees the slot of a running execution; held reports
	// whether it held one. Bad input returns an error wrapping
	// coordinator.ErrInvalidArgument.
	NotifyCompletion(ctx context.Context, action, executionID string) (held bool, err error)
	// Owner is the Coordinator's ID, unique among live Coordinators; it
	// names the listener's consumer unless Config.Consumer does.
	Owner() string
}

var _ Coordinator = (*coordinator.Coordinator)(nil)

// How long one Redis call of the listener may take. Calls run on contexts
// of their own, not the caller's, so that work already read is finished
// even while Stop waits.
const (
	callTimeout   = 10 * time.Second
	forgetTimeout = 5 * time.Second
	// maxClaimBatches bounds the XAUTOCLAIM calls of one claim round.
	maxClaimBatches = 10
)

// Listener consumes completion events for a Coordinator: it reads the
// completion stream in a consumer group, calls NotifyCompletion for each
// event, then acknowledges it. Several listeners (in several daemons) may
// share the group; entries left pending by a dead one are claimed by a live
// one. Create it with New, then Start and Stop it; it runs once.
type Listener struct {
	c      Coordinator
	rdb    redis.UniversalClient
	stream string
	cfg    Config
	log    *slog.Logger

	mu      sync.Mutex
	started bool
	stopped bool
	stop    chan struct{} // closed by the first Stop
	done    chan struct{} // closed when run returns
}

// New returns a stopped listener for the completion stream of cfg.Prefix,
// reading it with rdb and freeing slots with c. cfg is filled by
// WithDefaults (and Consumer by c.Owner()) and then validated.
func New(rdb redis.UniversalClient, c Coordinator, cfg Config) (*Listener, error) {
	if rdb == nil {
		return nil, errors.New("completion: nil Redis client")
	}
	if c == nil {
		return nil, errors.New("completion: nil Coordinator")
	}
	cfg = cfg.WithDefaults()
	if cfg.Consumer == "" {
		cfg.Consumer = c.Owner()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Listener{
		c:      c,
		rdb:    rdb,
		stream: coordinator.CompletedStream(cfg.Prefix),
		cfg:    cfg,
		log: cfg.Logger.With(slog.String("component", "completion_listener"),
			slog.String("consumer", cfg.Consumer)),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}, nil
}

// Stream is the name of the stream the listener reads.
func (l *Listener) Stream() string { return l.stream }

// Start creates the consumer group if needed (reading from the start of the
// stream, so events published before any daemon ran are not lost) and
// starts consuming in the background; ctx bounds only that first step. It
// fails when Redis cannot be reached, and then may be called again; it
// also fails when the listener was started or stopped before.
func (l *Listener) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped:
		return errors.New("completion: listener: Start after Stop (a listener runs once)")
	case l.started:
		return errors.New("completion: listener: started twice")
	}
	if err := l.ensureGroup(ctx); err != nil {
		return err
	}
	l.started = true
	go l.run()
	return nil
}

// Stop stops consuming: the round in progress finishes (its events are
// applied and acknowledged), then Stop returns. Safe to call twice,
// concurrently, and before Start.
func (l *Listener) Stop() {
	l.mu.Lock()
	if !l.stopped {
		l.stopped = true
		close(l.stop)
	}
	started := l.started
	l.mu.Unlock()
	if started {
		<-l.done
	}
}

func (l *Listener) ensureGroup(ctx context.Context) error {
	err := l.rdb.XGroupCreateMkStream(ctx, l.stream, l.cfg.Group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("completion: creating consumer group %s on %s: %w", l.cfg.Group, l.stream, err)
	}
	return nil
}

func (l *Listener) stopping() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// run is the consume loop: claim abandoned entries now and then, read new
// ones, apply, acknowledge. Work already read is always finished, even
// when Stop was called meanwhile, so nothing this consumer read stays
// pending after a clean stop (unless it Failed).
func (l *Listener) run() {
	defer close(l.done)
	defer l.forgetConsumer()
	var lastClaim time.Time
	failures := 0
	for !l.stopping() {
		var err error
		if time.Since(lastClaim) >= l.cfg.ClaimInterval {
			err = l.claim()
			if err == nil {
				lastClaim = time.Now()
			}
		}
		if err == nil {
			err = l.read()
		}
		if err == nil {
			failures = 0
			continue
		}
		failures++
		if failures == 1 || failures%30 == 0 {
			l.log.Warn("completion: redis", slog.Any("error", err), slog.Int("failures", failures))
		}
		l.pause(backoff(failures))
	}
}

// backoff is the pause after the given number of consecutive failures:
// 100ms, doubling, at most 1s.
func backoff(failures int) time.Duration {
	return min(50*time.Millisecond<<min(failures, 5), time.Second)
}

func (l *Listener) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.stop:
	case <-t.C:
	}
}

// call returns a context for one Redis call that must finish even during
// Stop.
func call(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// recreate handles NOGROUP (the stream or the group is gone, for example
// after Redis restarted empty): it creates them again, and still reports
// err so that the loop backs off.
func (l *Listener) recreate(err error) error {
	ctx, cancel := call(callTimeout)
	defer cancel()
	return errors.Join(err, l.ensureGroup(ctx))
}

func (l *Listener) read() error {
	ctx, cancel := call(l.cfg.Block + callTimeout)
	defer cancel()
	res, err := l.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    l.cfg.Group,
		Consumer: l.cfg.Consumer,
		Streams:  []string{l.stream, ">"},
		Count:    int64(l.cfg.Batch),
		Block:    l.cfg.Block,
	}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case redis.HasErrorPrefix(err, "NOGROUP"):
		return l.recreate(err)
	case err != nil:
		return fmt.Errorf("reading %s: %w", l.stream, err)
	}
	for _, s := range res {
		l.apply(s.Messages)
	}
	return nil
}

// claim takes over entries that consumers (presumably dead ones, or this
// one after a Failed event) read but did not acknowledge within ClaimIdle,
// at most maxClaimBatches batches per call.
func (l *Listener) claim() error {
	start := "0-0"
	for range maxClaimBatches {
		ctx, cancel := call(callTimeout)
		msgs, next, err := l.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream:   l.stream,
			Group:    l.cfg.Group,
			Consumer: l.cfg.Consumer,
			MinIdle:  l.cfg.ClaimIdle,
			Start:    start,
			Count:    int64(l.cfg.Batch),
		}).Result()
		cancel()
		switch {
		case redis.HasErrorPrefix(err, "NOGROUP"):
			return l.recreate(err)
		case err != nil:
			return fmt.Errorf("claiming from %s: %w", l.stream, err)
		}
		if len(msgs) > 0 {
			l.log.Info("completion: claimed unacknowledged events", slog.Int("count", len(msgs)))
			l.apply(msgs)
		}
		if next == "0-0" || next == "" || l.stopping() {
			return nil
		}
		start = next
	}
	return nil
}

// apply frees the slot of each event and acknowledges the events handled.
// An event that Failed stays pending; a claim round retries it after
// ClaimIdle.
func (l *Listener) apply(msgs []redis.XMessage) {
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if l.applyOne(m).acknowledged() {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := call(callTimeout)
	defer cancel()
	if err := l.rdb.XAck(ctx, l.stream, l.cfg.Group, ids...).Err(); err != nil {
		// Not fatal: the entries stay pending and are applied again later,
		// which changes nothing.
		l.log.Warn("completion: acknowledging", slog.Any("error", err), slog.Int("count", len(ids)))
	}
}

// applyOne frees the slot of one event, logs and reports the outcome.
func (l *Listener) applyOne(m redis.XMessage) Outcome {
	action, _ := m.Values["action"].(string)
	id, _ := m.Values["execution"].(string)
	status, _ := m.Values["status"].(string)
	ctx, cancel := call(callTimeout)
	held, err := l.c.NotifyCompletion(ctx, action, id)
	cancel()
	o := outcomeOf(held, err)
	attrs := []any{slog.String("event_id", m.ID), slog.Any("outcome", o), slog.String("action", action),
		slog.String("execution_id", id), slog.String("status", status)}
	switch o {
	case Invalid:
		l.log.Warn("completion: dropping invalid event", append(attrs, slog.Any("error", err))...)
	case Failed:
		l.log.Warn("completion: release failed; will retry", append(attrs, slog.Any("error", err))...)
	default:
		l.log.Debug("completion: event applied", attrs...)
	}
	if l.cfg.OnEvent != nil {
		l.cfg.OnEvent(o)
	}
	return o
}

// outcomeOf classifies the result of NotifyCompletion.
func outcomeOf(held bool, err error) Outcome {
	switch {
	case errors.Is(err, coordinator.ErrInvalidArgument):
		return Invalid
	case err != nil:
		return Failed
	case held:
		return Released
	}
	return NotHeld
}

// forgetConsumer removes this consumer from the group after a clean stop,
// so groups do not collect the names of every daemon that ever ran. Only
// when it holds no pending entries: deleting a consumer drops its pending
// list.
func (l *Listener) forgetConsumer() {
	ctx, cancel := call(forgetTimeout)
	defer cancel()
	pending, err := l.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: l.stream, Group: l.cfg.Group, Start: "-", End: "+", Count: 1, Consumer: l.cfg.Consumer,
	}).Result()
	if err != nil || len(pending) > 0 {
		return
	}
	if err := l.rdb.XGroupDelConsumer(ctx, l.stream, l.cfg.Group, l.cfg.Consumer).Err(); err != nil {
		l.log.Debug("completion: removing the consumer", slog.Any("error", err))
	}
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"github.com/batonhq/baton/internal/keys"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Completion events: workers that finish an execution publish one entry on
// the stream CompletedStream(prefix) with the fields action, execution and
// status; a CompletionListener (in the daemon) reads them in a consumer group,
// frees the slot with NotifyCompletion and acknowledges the entry.
//
// Delivery is at least once: an entry whose consumer died before XACK is
// claimed by another consumer and applied again, which changes nothing
// because a release of a slot that is no longer held is a no-op.

// CompletionStreamMaxLen is the approximate length (XADD MAXLEN ~) the
// completion stream is trimmed to on every publish, so a stream that no
// listener reads cannot grow without bound. Entries beyond it are dropped
// even if unread; their slots then come back when their leases expire.
const CompletionStreamMaxLen = 1_000_000

// maxStatusLength bounds the status field of a completion event, in bytes.
const maxStatusLength = 64

// PublishCompletion reports that executionID of action finished with status
// (free text such as "succeeded" or "failed"; Baton only stores it) on the
// completion stream of the default prefix. Invalid input returns an error
// wrapping ErrInvalidArgument and writes nothing.
func PublishCompletion(ctx context.Context, rdb redis.UniversalClient, action, executionID, status string) error {
	return PublishCompletionWithPrefix(ctx, rdb, DefaultPrefix, action, executionID, status)
}

// PublishCompletionWithPrefix is PublishCompletion for Coordinators whose
// Options.Prefix is prefix ("" means DefaultPrefix).
func PublishCompletionWithPrefix(ctx context.Context, rdb redis.UniversalClient, prefix, action, executionID, status string) error {
	if rdb == nil {
		return fmt.Errorf("%w: nil Redis client", ErrInvalidArgument)
	}
	if strings.ContainsAny(prefix, "{}") {
		return fmt.Errorf("%w: prefix %q: must not contain '{' or '}'", ErrInvalidArgument, prefix)
	}
	if err := validate(action, executionID); err != nil {
		return err
	}
	if err := validateStatus(status); err != nil {
		return err
	}
	err := rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: CompletedStream(prefix),
		MaxLen: CompletionStreamMaxLen,
		Approx: true,
		Values: []any{"action", action, "execution", executionID, "status", status},
	}).Err()
	if err != nil {
		return fmt.Errorf("baton: publishing completion %s/%s: %w", action, executionID, err)
	}
	return nil
}

func validateStatus(status string) error {
	switch {
	case status == "":
		return fmt.Errorf("%w: status: empty", ErrInvalidArgument)
	case len(status) > maxStatusLength:
		return fmt.Errorf("%w: status: %d bytes, over the %d-byte maximum", ErrInvalidArgument, len(status), maxStatusLength)
	case !utf8.ValidString(status):
		return fmt.Errorf("%w: status %q: not valid UTF-8", ErrInvalidArgument, status)
	}
	for i, r := range status {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: status %q: control character %U at byte %d", ErrInvalidArgument, status, r, i)
		}
	}
	return nil
}

// CompletionListenerOptions configure a CompletionListener. A zero value in
// any field means the documented default.
type CompletionListenerOptions struct {
	// Group is the consumer group every daemon shares, so each event is
	// handled by one of them. Defaults to "baton-coordinator".
	Group string

	// Consumer names this listener within the group; it must be unique
	// among live listeners. Defaults to "<owner>" of the Coordinator.
	Consumer string

	// Batch is the most entries read or claimed per round. Defaults to 100.
	Batch int

	// Block is the server-side timeout of one XREADGROUP round; Stop waits
	// at most about this long for a round in progress. Defaults to 1s.
	Block time.Duration

	// ClaimIdle is how long an entry may stay delivered but unacknowledged
	// before another listener claims it (XAUTOCLAIM): the consumer that
	// read it is presumed dead. It is also how soon an entry that failed
	// (Redis unreachable) is retried. Defaults to 30s.
	ClaimIdle time.Duration

	// ClaimInterval is how often a listener looks for such entries.
	// Defaults to ClaimIdle/2.
	ClaimInterval time.Duration

	// Logger receives the listener's logs. Defaults to the logger of the
	// Coordinator's Options.
	Logger *slog.Logger

	// OnEvent, if set, is called once per handled entry with the outcome:
	// "released" (a slot was freed), "not_held" (nothing to free: a
	// duplicate or a stale event), "invalid" (dropped) or "error" (left
	// pending for a retry). Used for metrics.
	OnEvent func(outcome string)
}

func (o CompletionListenerOptions) withDefaults(c *Coordinator) CompletionListenerOptions {
	if o.Group == "" {
		o.Group = "baton-coordinator"
	}
	if o.Consumer == "" {
		o.Consumer = c.owner
	}
	if o.Batch == 0 {
		o.Batch = 100
	}
	if o.Block == 0 {
		o.Block = time.Second
	}
	if o.ClaimIdle == 0 {
		o.ClaimIdle = 30 * time.Second
	}
	if o.ClaimInterval == 0 {
		o.ClaimInterval = o.ClaimIdle / 2
	}
	if o.Logger == nil {
		o.Logger = c.opts.Logger
	}
	if o.OnEvent == nil {
		o.OnEvent = func(string) {}
	}
	return o
}

func (o CompletionListenerOptions) validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: CompletionListenerOptions.%s = %v: %s", ErrInvalidArgument, field, v, why)
	}
	switch {
	case o.Batch < 1:
		return bad("Batch", o.Batch, "must be at least 1")
	case o.Block < time.Millisecond:
		return bad("Block", o.Block, "must be at least 1ms")
	case o.ClaimIdle < 10*time.Millisecond:
		return bad("ClaimIdle", o.ClaimIdle, "must be at least 10ms")
	case o.ClaimInterval < time.Millisecond:
		return bad("ClaimInterval", o.ClaimInterval, "must be at least 1ms")
	}
	return nil
}

// CompletionListener consumes completion events for a Coordinator: it reads
// the completion stream in a consumer group, calls NotifyCompletion for
// each event, then acknowledges it. Several listeners (in several daemons)
// may share the group; entries left pending by a dead one are claimed by a
// live one. Create it with NewCompletionListener, then Start and Stop it.
type CompletionListener struct {
	c      *Coordinator
	rdb    redis.UniversalClient
	stream string
	opts   CompletionListenerOptions
	log    *slog.Logger

	mu      sync.Mutex
	started bool
	stop    chan struct{}
	done    chan struct{}
}

// NewCompletionListener returns a stopped listener for c's completion
// stream (CompletedStream of c's prefix), using c's Redis client.
func NewCompletionListener(c *Coordinator, opts CompletionListenerOptions) (*CompletionListener, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil Coordinator", ErrInvalidArgument)
	}
	opts = opts.withDefaults(c)
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &CompletionListener{
		c:      c,
		rdb:    c.rdb,
		stream: c.keys.Completed(),
		opts:   opts,
		log: opts.Logger.With(slog.String("component", "completion_listener"),
			slog.String("consumer", opts.Consumer)),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}, nil
}

// Start creates the consumer group if needed (reading from the start of the
// stream, so events published before any daemon ran are not lost) and
// starts consuming in the background. It fails when Redis cannot be reached
// or the listener was started before.
func (l *CompletionListener) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return errors.New("baton: completion listener: started twice")
	}
	if err := l.ensureGroup(ctx); err != nil {
		return err
	}
	l.started = true
	go l.run()
	return nil
}

// Stop stops consuming: the round in progress finishes (its events are
// applied and acknowledged), then Stop returns. Safe to call twice, and
// before Start.
func (l *CompletionListener) Stop() {
	l.mu.Lock()
	started := l.started
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	if started {
		<-l.done
	}
}

func (l *CompletionListener) ensureGroup(ctx context.Context) error {
	err := l.rdb.XGroupCreateMkStream(ctx, l.stream, l.opts.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("baton: creating consumer group %s on %s: %w", l.opts.Group, l.stream, err)
	}
	return nil
}

func (l *CompletionListener) stopping() bool {
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
// pending after a clean stop.
func (l *CompletionListener) run() {
	defer close(l.done)
	defer l.forgetConsumer()
	var lastClaim time.Time
	failures := 0
	for !l.stopping() {
		var err error
		if time.Since(lastClaim) >= l.opts.ClaimInterval {
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
			l.log.Warn("baton: completion listener: redis", slog.Any("error", err), slog.Int("failures", failures))
		}
		l.pause(backoff(failures))
	}
}

func (l *CompletionListener) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.stop:
	case <-t.C:
	}
}

// work is a context for Redis calls that must finish even during Stop.
func (l *CompletionListener) work(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func (l *CompletionListener) read() error {
	ctx, cancel := l.work(l.opts.Block + 10*time.Second)
	defer cancel()
	res, err := l.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    l.opts.Group,
		Consumer: l.opts.Consumer,
		Streams:  []string{l.stream, ">"},
		Count:    int64(l.opts.Batch),
		Block:    l.opts.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOGROUP") {
			// The stream or group is gone (Redis restarted empty): recreate it.
			return errors.Join(err, l.ensureGroup(ctx))
		}
		return fmt.Errorf("reading %s: %w", l.stream, err)
	}
	for _, s := range res {
		l.apply(s.Messages)
	}
	return nil
}

// claim takes over entries that other (presumably dead) consumers read but
// did not acknowledge within ClaimIdle, a bounded number of batches per call.
func (l *CompletionListener) claim() error {
	start := "0-0"
	for range 10 {
		ctx, cancel := l.work(10 * time.Second)
		msgs, next, err := l.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream:   l.stream,
			Group:    l.opts.Group,
			Consumer: l.opts.Consumer,
			MinIdle:  l.opts.ClaimIdle,
			Start:    start,
			Count:    int64(l.opts.Batch),
		}).Result()
		cancel()
		if err != nil {
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				ctx, cancel := l.work(10 * time.Second)
				defer cancel()
				return errors.Join(err, l.ensureGroup(ctx))
			}
			return fmt.Errorf("claiming from %s: %w", l.stream, err)
		}
		if len(msgs) > 0 {
			l.log.Info("baton: completion listener: claimed abandoned events", slog.Int("count", len(msgs)))
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
// An event that failed for a transient reason stays pending; a claim round
// retries it after ClaimIdle.
func (l *CompletionListener) apply(msgs []redis.XMessage) {
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if outcome := l.applyOne(m); outcome != "error" {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := l.work(10 * time.Second)
	defer cancel()
	if err := l.rdb.XAck(ctx, l.stream, l.opts.Group, ids...).Err(); err != nil {
		// Not fatal: the entries stay pending and are applied again later,
		// which is a no-op.
		l.log.Warn("baton: completion listener: ack", slog.Any("error", err), slog.Int("count", len(ids)))
	}
}

func (l *CompletionListener) applyOne(m redis.XMessage) (outcome string) {
	defer func() { l.opts.OnEvent(outcome) }()
	action, _ := m.Values["action"].(string)
	id, _ := m.Values["execution"].(string)
	status, _ := m.Values["status"].(string)
	ctx, cancel := l.work(10 * time.Second)
	defer cancel()
	held, err := l.c.NotifyCompletion(ctx, action, id)
	switch {
	case errors.Is(err, ErrInvalidArgument):
		l.log.Warn("baton: completion listener: dropping invalid event", slog.String("event_id", m.ID),
			slog.Any("error", err))
		return "invalid"
	case err != nil:
		l.log.Warn("baton: completion listener: release failed; will retry", slog.String("event_id", m.ID),
			slog.String("action", action), slog.String("execution_id", id), slog.Any("error", err))
		return "error"
	case !held:
		l.log.Debug("baton: completion listener: execution held no slot", slog.String("event_id", m.ID),
			slog.String("action", action), slog.String("execution_id", id), slog.String("status", status))
		return "not_held"
	}
	l.log.Debug("baton: completion listener: released", slog.String("event_id", m.ID),
		slog.String("action", action), slog.String("execution_id", id), slog.String("status", status))
	return "released"
}

// forgetConsumer removes this consumer from the group after a clean stop,
// so groups do not collect the names of every daemon that ever ran. Only
// when it holds no pending entries: deleting a consumer drops its pending
// list.
func (l *CompletionListener) forgetConsumer() {
	ctx, cancel := l.work(5 * time.Second)
	defer cancel()
	pending, err := l.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: l.stream, Group: l.opts.Group, Start: "-", End: "+", Count: 1, Consumer: l.opts.Consumer,
	}).Result()
	if err != nil || len(pending) > 0 {
		return
	}
	_ = l.rdb.XGroupDelConsumer(ctx, l.stream, l.opts.Group, l.opts.Consumer).Err()
}

// CompletedStream is the name of the stream workers publish completion
// events to, for the given key prefix ("" means DefaultPrefix).
func CompletedStream(prefix string) string { return keys.New(prefix).Completed() }

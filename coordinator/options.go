package coordinator

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Options configure a Coordinator. A zero value in any field means the
// documented default for that field.
type Options struct {
	// Prefix starts every key name. It must not contain '{' or '}'.
	// Defaults to "baton".
	Prefix string

	// MaxQueueLength is the most executions that may wait per action; the
	// next one gets ErrQueueFull. Negative means unbounded. Defaults to 100,000.
	MaxQueueLength int

	// QueueTimeout is how long an execution may wait, on the Redis clock,
	// before it gets ErrQueueTimeout. Negative means no timeout (only the
	// caller's context ends the wait). Defaults to 5 minutes.
	QueueTimeout time.Duration

	// LeaseTTL is how long a slot stays held after its process's last
	// heartbeat. Heartbeats run every LeaseTTL/3. Defaults to 30 seconds.
	LeaseTTL time.Duration

	// AckTimeout is how long a waiter's process has to acknowledge a grant
	// before the slot is reclaimed and that process presumed dead. Must be
	// below LeaseTTL. Defaults to 5 seconds.
	AckTimeout time.Duration

	// SweepInterval is how often this Coordinator runs a sweep pass in the
	// background. Negative turns background sweeping off. Defaults to 1 second.
	SweepInterval time.Duration

	// SweepBatch is the most due actions one sweep pass claims. Defaults to 100.
	SweepBatch int

	// BlockTimeout is the server-side timeout of one BLPOP round; between
	// rounds the wait loop checks for shutdown. Whole seconds; defaults to 1s.
	BlockTimeout time.Duration

	// MaxWaitConns bounds the connections used for blocking waits: one per
	// action with waiters in this process, up to this many. Actions beyond it
	// share connections round by round, with BLPOP timeouts cut so that a full
	// rotation takes about AckTimeout/4 (so grants are read before their
	// acknowledgement deadline); the more actions per connection, the more
	// BLPOP rounds Redis serves. The client's pool must be larger than this.
	// Defaults to 50, or half the pool size of a *redis.Client or
	// *redis.ClusterClient whose pool is smaller than 100.
	MaxWaitConns int

	// PolicyRefresh is how often the cached limits are checked against Redis.
	// A change made by another process is seen within this interval (the
	// process that makes it applies it to known actions at once). Defaults
	// to 500 ms.
	PolicyRefresh time.Duration

	// Logger receives the Coordinator's logs. Defaults to a logger that
	// discards everything.
	Logger *slog.Logger
}

// WithDefaults returns a copy of o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.MaxQueueLength == 0 {
		o.MaxQueueLength = 100_000
	}
	if o.QueueTimeout == 0 {
		o.QueueTimeout = 5 * time.Minute
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = time.Second
	}
	if o.SweepBatch == 0 {
		o.SweepBatch = 100
	}
	if o.BlockTimeout == 0 {
		o.BlockTimeout = time.Second
	}
	if o.MaxWaitConns == 0 {
		o.MaxWaitConns = 50
	}
	if o.PolicyRefresh == 0 {
		o.PolicyRefresh = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports the first field that holds an unusable value, by name.
func (o Options) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: Options.%s = %v: %s", ErrInvalidArgument, field, v, why)
	}
	switch {
	case strings.ContainsAny(o.Prefix, "{}"):
		return bad("Prefix", fmt.Sprintf("%q", o.Prefix), "must not contain '{' or '}' (they would move keys out of the action's hash slot)")
	case o.LeaseTTL < 100*time.Millisecond:
		return bad("LeaseTTL", o.LeaseTTL, "must be at least 100ms")
	case o.AckTimeout < 10*time.Millisecond || o.AckTimeout >= o.LeaseTTL:
		return bad("AckTimeout", o.AckTimeout, "must be at least 10ms and below LeaseTTL")
	case o.BlockTimeout < time.Second || o.BlockTimeout%time.Second != 0:
		return bad("BlockTimeout", o.BlockTimeout, "must be a whole number of seconds (BLPOP's unit)")
	case o.MaxWaitConns < 1:
		return bad("MaxWaitConns", o.MaxWaitConns, "must be at least 1")
	case o.SweepBatch < 1:
		return bad("SweepBatch", o.SweepBatch, "must be at least 1")
	case o.PolicyRefresh < 10*time.Millisecond:
		return bad("PolicyRefresh", o.PolicyRefresh, "must be at least 10ms")
	}
	return nil
}

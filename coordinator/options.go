package coordinator

import (
	"fmt"

	"github.com/redis/go-redis/v9"
	"log/slog"
	"strings"
	"time"

	"github.com/batonhq/baton/internal/keys"
)

// The defaults of Options, exported so that the daemon and the bench do
// not re-type them.
const (
	// DefaultPrefix is the key prefix when Options.Prefix is empty.
	DefaultPrefix = keys.DefaultPrefix
	// DefaultMaxQueueLength is Options.MaxQueueLength's default.
	DefaultMaxQueueLength = 100_000
	// DefaultQueueTimeout is Options.QueueTimeout's default.
	DefaultQueueTimeout = 5 * time.Minute
	// DefaultLeaseTTL is Options.LeaseTTL's default.
	DefaultLeaseTTL = 30 * time.Second
	// DefaultAckTimeout is the longest default of Options.AckTimeout; the
	// default is the smaller of this and LeaseTTL/2.
	DefaultAckTimeout = 5 * time.Second
	// DefaultSweepInterval is Options.SweepInterval's default.
	DefaultSweepInterval = time.Second
	// DefaultSweepBatch is Options.SweepBatch's default.
	DefaultSweepBatch = 100
	// DefaultBlockTimeout is Options.BlockTimeout's default.
	DefaultBlockTimeout = time.Second
	// DefaultMaxWaitConns is Options.MaxWaitConns's default (for clients
	// whose pool size is unknown or at least 100).
	DefaultMaxWaitConns = 50
	// DefaultScriptConns is Options.ScriptConns's default.
	DefaultScriptConns = 4
	// DefaultPolicyRefresh is Options.PolicyRefresh's default.
	DefaultPolicyRefresh = 500 * time.Millisecond
	// DefaultWaitTimeout is Options.WaitTimeout's default.
	DefaultWaitTimeout = time.Second
)

// Options configure a Coordinator. A zero value in any field means the
// documented default for that field.
type Options struct {
	// Prefix starts every key name. It must not contain '{' or '}'.
	// Defaults to DefaultPrefix ("baton").
	Prefix string

	// MaxQueueLength is the most executions that may wait per action; the
	// next one gets ErrQueueFull. Negative means unbounded. Defaults to
	// DefaultMaxQueueLength (100,000).
	MaxQueueLength int

	// QueueTimeout is how long an execution may wait, on the Redis clock,
	// before it gets ErrQueueTimeout. Negative means no timeout (only the
	// caller's context ends the wait). Defaults to DefaultQueueTimeout (5 minutes).
	QueueTimeout time.Duration

	// LeaseTTL is how long a slot stays held after its process's last
	// heartbeat, and how long a silent process counts as alive. Heartbeats
	// run every LeaseTTL/3. Defaults to DefaultLeaseTTL (30 seconds).
	LeaseTTL time.Duration

	// AckTimeout is how long a grant may wait for its waiter's process to
	// read its token. A grant still unread after it goes back to the head of
	// the queue if the process is alive (it keeps its place), or is dropped
	// if the process is dead. Must be below LeaseTTL. Defaults to the
	// smaller of DefaultAckTimeout (5 seconds) and LeaseTTL/2.
	AckTimeout time.Duration

	// SweepInterval is how often this Coordinator runs a sweep pass in the
	// background. Negative turns background sweeping off. Defaults to
	// DefaultSweepInterval (1 second).
	SweepInterval time.Duration

	// SweepBatch is the most due actions one sweep pass claims. Defaults to
	// DefaultSweepBatch (100).
	SweepBatch int

	// BlockTimeout is the server-side timeout of one BLPOP round; between
	// rounds the wait loop checks for shutdown. Whole seconds; defaults to
	// DefaultBlockTimeout (1s).
	BlockTimeout time.Duration

	// MaxWaitConns bounds the connections used for blocking waits: one per
	// action with waiters in this process, up to this many. Actions beyond it
	// share connections round by round, with BLPOP timeouts cut so that a full
	// rotation takes about AckTimeout/4. For a *redis.Client or
	// *redis.ClusterClient the waits use a pool of their own with this many
	// connections (and no command retries, so that a lost reply is noticed);
	// for other clients they use the client's pool, which must be larger.
	// Defaults to DefaultMaxWaitConns (50).
	MaxWaitConns int

	// WaitClient, when set, is the client blocking waits (BLPOP) use, and
	// must not be rdb itself. It should not retry commands (MaxRetries -1),
	// so that a dropped connection reaches the wait loop, which then
	// reconciles with Redis; Close does not close it. Defaults to a client
	// of its own made from rdb's options (for *redis.Client and
	// *redis.ClusterClient; hooks added to rdb are not copied) with
	// MaxWaitConns connections and no retries, or else rdb itself.
	WaitClient redis.UniversalClient

	// ScriptConns is how many pipelines of script calls may be in flight at
	// once. Calls made while they are all busy are sent together in the
	// next pipeline, so under load Redis reads and answers many calls per
	// system call. Defaults to DefaultScriptConns (4).
	ScriptConns int

	// PolicyRefresh is how often the cached limits are checked against Redis.
	// A change made by another process is seen within this interval (the
	// process that makes it applies it to known actions at once). Defaults
	// to DefaultPolicyRefresh (500 ms).
	PolicyRefresh time.Duration

	// WaitReplicas, when above 0, makes every state-changing call (admission,
	// queueing, release, cancel, timeout, heartbeat, reconcile, limit push)
	// wait until this many replicas of the master that ran it have
	// acknowledged it, before the call reports success: WAIT is pipelined
	// right after the script on the same connection (on a cluster, the
	// master of the action's slot), so it costs no extra round trip. A call
	// that ran but was not acknowledged in time fails with ErrNotReplicated
	// (an admission or a queueing is undone first, as far as Redis lets).
	// A grant read from a BLPOP (written by another process's release) is
	// confirmed the same way before it is delivered: one more round trip per
	// queued admission. Sweeps do not wait: a grant they make is confirmed
	// by its waiter the same way, and a reclaim a failover loses is made
	// again. See RELIABILITY.md. Defaults to 0 (replication is
	// asynchronous: a failover can lose acknowledged writes).
	WaitReplicas int

	// WaitTimeout bounds each WAIT of WaitReplicas. It must be below the
	// client's ReadTimeout (go-redis's default is 3 s). Defaults to
	// DefaultWaitTimeout (1 s).
	WaitTimeout time.Duration

	// ReadOnly makes a Coordinator for reading only (statistics, execution
	// states, policies, listings): it claims no owner ID and runs no
	// background work, so it writes nothing to Redis. Calls that would write
	// (admission, release, cancel, policy changes, sweeps) fail with
	// ErrReadOnly. Defaults to false.
	ReadOnly bool

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
		o.MaxQueueLength = DefaultMaxQueueLength
	}
	if o.QueueTimeout == 0 {
		o.QueueTimeout = DefaultQueueTimeout
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = min(DefaultAckTimeout, o.LeaseTTL/2)
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.SweepBatch == 0 {
		o.SweepBatch = DefaultSweepBatch
	}
	if o.BlockTimeout == 0 {
		o.BlockTimeout = DefaultBlockTimeout
	}
	if o.MaxWaitConns == 0 {
		o.MaxWaitConns = DefaultMaxWaitConns
	}
	if o.ScriptConns == 0 {
		o.ScriptConns = DefaultScriptConns
	}
	if o.PolicyRefresh == 0 {
		o.PolicyRefresh = DefaultPolicyRefresh
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports the first field that holds an unusable value, by name.
// Only values the caller set can be invalid: every default is valid with
// every valid setting of the other fields.
func (o Options) Validate() error {
	o = o.WithDefaults()
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: Options.%s = %v: %s", ErrInvalidArgument, field, v, why)
	}
	switch {
	case strings.ContainsAny(o.Prefix, "{}"):
		return bad("Prefix", fmt.Sprintf("%q", o.Prefix), "must not contain '{' or '}' (they would move keys out of the action's hash slot)")
	case o.LeaseTTL < 100*time.Millisecond:
		return bad("LeaseTTL", o.LeaseTTL, "must be at least 100ms")
	case o.AckTimeout < 10*time.Millisecond || o.AckTimeout >= o.LeaseTTL:
		return bad("AckTimeout", o.AckTimeout, fmt.Sprintf("must be at least 10ms and below LeaseTTL (%v)", o.LeaseTTL))
	case o.BlockTimeout < time.Second || o.BlockTimeout%time.Second != 0:
		return bad("BlockTimeout", o.BlockTimeout, "must be a whole number of seconds (BLPOP's unit)")
	case o.MaxWaitConns < 1:
		return bad("MaxWaitConns", o.MaxWaitConns, "must be at least 1")
	case o.ScriptConns < 1:
		return bad("ScriptConns", o.ScriptConns, "must be at least 1")
	case o.SweepBatch < 1:
		return bad("SweepBatch", o.SweepBatch, "must be at least 1")
	case o.PolicyRefresh < 10*time.Millisecond:
		return bad("PolicyRefresh", o.PolicyRefresh, "must be at least 10ms")
	case o.WaitReplicas < 0:
		return bad("WaitReplicas", o.WaitReplicas, "must not be negative")
	case o.WaitTimeout < time.Millisecond:
		return bad("WaitTimeout", o.WaitTimeout, "must be at least 1ms (WAIT's unit)")
	}
	return nil
}

package completion

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/batonhq/baton/coordinator"
)

// Defaults of Config.
const (
	// DefaultGroup is the consumer group every daemon shares.
	DefaultGroup = "baton-coordinator"
	// DefaultBatch is the most entries read or claimed per round.
	DefaultBatch = 100
	// DefaultBlock is the server-side timeout of one XREADGROUP round.
	DefaultBlock = time.Second
	// DefaultClaimIdle is how long an entry may stay delivered but
	// unacknowledged before another listener claims it.
	DefaultClaimIdle = 30 * time.Second
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("completion: invalid config")

// Config configures a Listener. A zero value in any field means its
// default; WithDefaults fills them.
type Config struct {
	// Prefix is the key prefix of the Coordinator (its Options.Prefix): the
	// listener reads coordinator.CompletedStream(Prefix). It must not
	// contain '{' or '}'. Defaults to coordinator.DefaultPrefix ("baton").
	Prefix string

	// Group is the consumer group every daemon shares, so each event is
	// handled by one of them. Defaults to DefaultGroup ("baton-coordinator").
	Group string

	// Consumer names this listener within the group; it must be unique
	// among live listeners. Defaults to the Coordinator's Owner() (unique
	// among live Coordinators); New fills it, since WithDefaults does not
	// know the Coordinator.
	Consumer string

	// Batch is the most entries read or claimed per round. Defaults to
	// DefaultBatch (100).
	Batch int

	// Block is the server-side timeout of one XREADGROUP round; Stop waits
	// at most about this long for a round in progress. Defaults to
	// DefaultBlock (1s).
	Block time.Duration

	// ClaimIdle is how long an entry may stay delivered but unacknowledged
	// before a listener claims it (XAUTOCLAIM): the consumer that read it is
	// presumed dead. It is also how soon an event that Failed is retried.
	// Defaults to DefaultClaimIdle (30s).
	ClaimIdle time.Duration

	// ClaimInterval is how often a listener looks for such entries.
	// Defaults to ClaimIdle/2.
	ClaimInterval time.Duration

	// Logger receives the listener's logs, with the attributes
	// component=completion_listener and consumer. Defaults to a logger that
	// discards everything.
	Logger *slog.Logger

	// OnEvent, if set, is called once per handled event with its outcome,
	// from the listener's goroutine (so it must not block). Used for
	// metrics. Defaults to nil: no call.
	OnEvent func(Outcome)
}

// WithDefaults returns a copy of c with every zero field but Consumer set
// to its default.
func (c Config) WithDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = coordinator.DefaultPrefix
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = DefaultClaimIdle
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = c.ClaimIdle / 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first field of c (after WithDefaults) that is out
// of range, naming it, in an error wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: Config.%s = %v: %s", ErrInvalidConfig, field, v, why)
	}
	switch {
	case strings.ContainsAny(c.Prefix, "{}"):
		return bad("Prefix", fmt.Sprintf("%q", c.Prefix), "must not contain '{' or '}'")
	case strings.TrimSpace(c.Group) == "":
		return bad("Group", fmt.Sprintf("%q", c.Group), "must not be empty")
	case c.Consumer != "" && strings.TrimSpace(c.Consumer) == "":
		return bad("Consumer", fmt.Sprintf("%q", c.Consumer), "must not be blank")
	case c.Batch < 1:
		return bad("Batch", c.Batch, "must be at least 1")
	case c.Block < time.Millisecond:
		return bad("Block", c.Block, "must be at least 1ms")
	case c.ClaimIdle < 10*time.Millisecond:
		return bad("ClaimIdle", c.ClaimIdle, "must be at least 10ms")
	case c.ClaimInterval < time.Millisecond:
		return bad("ClaimInterval", c.ClaimInterval, "must be at least 1ms")
	}
	return nil
}

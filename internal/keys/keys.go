// Package keys builds every Redis key name Baton uses; no other package
// formats one. docs/keys.md holds the same table for operators.
//
// Per action, all with the hash tag {<ref>} so one script touches one slot:
//
//	<p>:{<ref>}:queue                LIST   waiting execution IDs, oldest first
//	<p>:{<ref>}:waiting              HASH   execution ID -> <seq: 9 base-62 digits><owner>
//	<p>:{<ref>}:running              ZSET   execution ID -> lease or grant deadline (ms)
//	<p>:{<ref>}:holders              HASH   execution ID -> "<fence>:<owner>:<since>:<seq>:<state>"
//	<p>:{<ref>}:owners               ZSET   owner -> liveness deadline (ms)
//	<p>:{<ref>}:meta                 HASH   limit, rate, quota, their sources and version, counters, totals
//	<p>:{<ref>}:waits                HASH   wait-time histogram
//	<p>:{<ref>}:quota                STRING "<window start ms>:<used>"; expires when the window ends
//	<p>:{<ref>}:grant:<owner>:<id>   LIST   wake-up tokens for one waiter
//	<p>:{<ref>}:wake:<owner>         LIST   wake-ups for one owner's wait loop
//
// Cross-action (other slots; written by separate commands, may be briefly stale):
//
//	<p>:actions                      SET    every action ref seen
//	<p>:sweep                        ZSET   action ref -> when a sweeper must visit (ms)
//	<p>:policies                     HASH   scope -> limit, rate:<scope> -> rate, quota:<scope> -> quota; _version
//	<p>:owner:<owner>                STRING who holds a short owner ID (host, pid); expires unless renewed
//	<p>:events:completed             STREAM completion events from workers
//
// The ref is escaped (% { } become %25 %7B %7D) so that no ref can end the
// hash tag early: every key of an action lands in that action's slot, and no
// two actions can name the same key. IDs come last, so they need no escaping.
// Scripts receive an action's base ("<p>:{<ref>}:") as an argument and build
// only the grant keys of other waiters from it.
package keys

import "strings"

// DefaultPrefix is the key prefix when none is configured.
const DefaultPrefix = "baton"

// Keys builds the key names under one prefix.
type Keys struct {
	prefix string
}

// New returns the key builder for prefix ("" means DefaultPrefix).
func New(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: prefix}
}

// Prefix is the prefix every key starts with.
func (k Keys) Prefix() string { return k.prefix }

// Action are the per-action keys of one action ref.
type Action struct {
	// Base is "<p>:{<ref>}:", the start of every key of the action.
	Base string
	// List holds the keys every per-action script declares, in order:
	// queue, waiting, running, holders, owners, meta, waits, quota.
	List []string
}

var refEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// Action returns the keys of the action ref.
func (k Keys) Action(ref string) Action {
	base := k.prefix + ":{" + refEscaper.Replace(ref) + "}:"
	return Action{
		Base: base,
		List: []string{
			base + "queue", base + "waiting", base + "running", base + "holders",
			base + "owners", base + "meta", base + "waits", base + "quota",
		},
	}
}

// Queue is the action's FIFO list of waiting execution IDs.
func (a Action) Queue() string { return a.List[0] }

// Waiting is the hash of waiting executions.
func (a Action) Waiting() string { return a.List[1] }

// Running is the sorted set of executions holding a slot.
func (a Action) Running() string { return a.List[2] }

// Holders is the hash describing each slot holder.
func (a Action) Holders() string { return a.List[3] }

// Owners is the sorted set of owners' liveness deadlines.
func (a Action) Owners() string { return a.List[4] }

// Meta is the action's limit, counters and totals.
func (a Action) Meta() string { return a.List[5] }

// Waits is the action's wait-time histogram.
func (a Action) Waits() string { return a.List[6] }

// Quota is the action's quota counter for the current window.
func (a Action) Quota() string { return a.List[7] }

// Grant is the wake-up list of one waiter (owner, execution ID).
func (a Action) Grant(owner, executionID string) string {
	return a.Base + "grant:" + owner + ":" + executionID
}

// Wake is the list that interrupts one owner's wait loop for this action.
func (a Action) Wake(owner string) string { return a.Base + "wake:" + owner }

// Actions is the set of every action ref seen.
func (k Keys) Actions() string { return k.prefix + ":actions" }

// Sweep is the sweep index: action ref -> due time (ms).
func (k Keys) Sweep() string { return k.prefix + ":sweep" }

// Policies is the hash of limits, rates and quotas by scope, with its _version field.
func (k Keys) Policies() string { return k.prefix + ":policies" }

// Owner is the registry key of one short owner ID.
func (k Keys) Owner(id string) string { return k.prefix + ":owner:" + id }

// Completed is the stream workers publish completion events to.
func (k Keys) Completed() string { return k.prefix + ":events:completed" }

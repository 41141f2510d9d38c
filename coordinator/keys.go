package coordinator

import "strings"

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "baton"

// keys builds every Redis key name Baton uses; no other file formats one.
// docs/keys.md holds the same table for operators.
//
// Per action, all with the hash tag {<ref>} so one script touches one slot:
//
//	<p>:{<ref>}:queue                LIST   waiting execution IDs, oldest first
//	<p>:{<ref>}:waiting              HASH   execution ID -> <seq: 9 base-62 digits><owner>
//	<p>:{<ref>}:running              ZSET   execution ID -> lease deadline (ms)
//	<p>:{<ref>}:holders              HASH   execution ID -> "<fence>:<owner>:<since>:<seq>:<state>"
//	<p>:{<ref>}:owners               ZSET   owner -> liveness deadline (ms)
//	<p>:{<ref>}:meta                 HASH   limit, its source and version, counters, totals
//	<p>:{<ref>}:waits                HASH   wait-time histogram
//	<p>:{<ref>}:grant:<owner>:<id>   LIST   wake-up tokens for one waiter
//	<p>:{<ref>}:wake:<owner>         LIST   wake-ups for one owner's wait loop
//
// Cross-action (other slots; written by separate commands, may be briefly stale):
//
//	<p>:actions                      SET    every action ref seen
//	<p>:sweep                        ZSET   action ref -> when a sweeper must visit (ms)
//	<p>:policies                     HASH   scope -> limit, and _version
//	<p>:owner:<owner>                STRING who holds a short owner ID (host, pid); expires unless renewed
//	<p>:events:completed             STREAM completion events from workers
//
// The ref is escaped (% { } become %25 %7B %7D) so that no ref can end the
// hash tag early: every key of an action lands in that action's slot, and no
// two actions can name the same key. IDs come last, so they need no escaping.
type keys struct {
	prefix string
}

// actionKeys are the per-action keys, in the order every action script
// declares them (KEYS[1..7]; see scripts/lib.lua).
type actionKeys struct {
	base string // "<p>:{<ref>}:"
	list []string
}

var refEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

func (k keys) action(ref string) actionKeys {
	base := k.prefix + ":{" + refEscaper.Replace(ref) + "}:"
	return actionKeys{
		base: base,
		list: []string{
			base + "queue", base + "waiting", base + "running", base + "holders",
			base + "owners", base + "meta", base + "waits",
		},
	}
}

func (a actionKeys) grant(owner, executionID string) string {
	return a.base + "grant:" + owner + ":" + executionID
}

func (a actionKeys) wake(owner string) string { return a.base + "wake:" + owner }

// with returns the seven action keys followed by extra keys.
func (a actionKeys) with(extra ...string) []string {
	out := make([]string, 0, len(a.list)+len(extra))
	return append(append(out, a.list...), extra...)
}

func (k keys) actions() string        { return k.prefix + ":actions" }
func (k keys) sweep() string          { return k.prefix + ":sweep" }
func (k keys) policies() string       { return k.prefix + ":policies" }
func (k keys) owner(id string) string { return k.prefix + ":owner:" + id }

// CompletedStream is the name of the stream workers publish completion
// events to, for the given key prefix ("" means DefaultPrefix).
func CompletedStream(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + ":events:completed"
}

// Package scripts holds Baton's Lua scripts, one file per operation, and
// wraps each once in a *redis.Script.
//
// Every per-action script is lib.lua followed by the operation's file, so
// the key table, the Redis clock and the grant logic are written once. Each
// file opens with its KEYS, ARGV and reply. Every script touches only keys
// that share the action's hash tag, so it runs unchanged on Redis Cluster.
//
// redis.Script.Run sends EVALSHA and falls back to EVAL on NOSCRIPT, so a
// restarted or failed-over Redis reloads them without help.
package scripts

import (
	"embed"

	"github.com/redis/go-redis/v9"
)

//go:embed *.lua
var files embed.FS

// Per-action scripts (KEYS[1..7] are the action's keys; see lib.lua).
var (
	// Enqueue admits an execution or queues it (enqueue.lua).
	Enqueue = action("enqueue.lua")
	// Release frees a slot and grants the next waiter (release.lua).
	Release = action("release.lua")
	// Ack turns a grant into a lease (ack.lua).
	Ack = action("ack.lua")
	// Cancel removes a waiter or gives back a late grant (cancel.lua).
	Cancel = action("cancel.lua")
	// Timeout ends a waiter whose queue timeout passed (timeout.lua).
	Timeout = action("timeout.lua")
	// Renew is one owner's heartbeat for one action (renew.lua).
	Renew = action("renew.lua")
	// Sweep reclaims and grants for one due action (sweep.lua).
	Sweep = action("sweep.lua")
	// ApplyPolicy pushes a new limit to one action (apply_policy.lua).
	ApplyPolicy = action("apply_policy.lua")
	// Stats reads an action's queue statistics (stats.lua).
	Stats = action("stats.lua")
	// State reads one execution's state (state.lua).
	State = action("state.lua")
)

// ClaimDue takes due actions out of the sweep index (claim_due.lua).
var ClaimDue = redis.NewScript(read("claim_due.lua"))

// All lists every script, for loading them ahead of use (readiness checks).
var All = []*redis.Script{Enqueue, Release, Ack, Cancel, Timeout, Renew, Sweep, ApplyPolicy, Stats, State, ClaimDue}

func action(name string) *redis.Script {
	return redis.NewScript(read("lib.lua") + "\n" + read(name))
}

func read(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		panic("scripts: missing embedded " + name) // a build defect, caught by every test
	}
	return string(b)
}

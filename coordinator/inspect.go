package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/scripts"
)

// Reads for operators (the daemon's dashboard, API and CLI): the waiting
// executions of an action, its holders, and forgetting an idle action. They
// use plain Redis commands on one action's keys, not scripts.

// MaxInspectPage is the most waiting executions one Waiting call returns.
const MaxInspectPage = 1000

// WaitingExecution is one execution in an action's queue.
type WaitingExecution struct {
	// Position is its place in the queue; 0 is the head (the next admitted).
	Position int64
	// ExecutionID is the execution's ID.
	ExecutionID string
	// Owner is the Coordinator (process) that waits for it.
	Owner string
	// EnqueuedAt is when its enqueue reached Redis (Redis clock).
	EnqueuedAt time.Time
	// Waited is how long it has waited so far, on the Redis clock.
	Waited time.Duration
}

// Holder is one execution holding a slot of an action: one entry of its
// running set. A slot counts from grant to release, so an entry whose
// deadline has passed still holds its slot until the core reclaims it (the
// next script on the action once that deadline has come, or a sweeper).
type Holder struct {
	// ExecutionID is the execution's ID.
	ExecutionID string
	// Token is its fencing token; 0 when its holders entry is missing or
	// unreadable (Redis lost it; the core reclaims the slot at its deadline).
	Token int64
	// Owner is the Coordinator (process) that holds it, or "-" for a lease
	// held by its token (KeepLease: an HTTP API client's).
	Owner string
	// Since is when the slot was granted (Redis clock).
	Since time.Time
	// LeaseDeadline is when the lease expires unless renewed, or for a
	// grant not yet acknowledged, when it must be (Redis clock).
	LeaseDeadline time.Time
	// Acknowledged is false while a grant is not yet known to be delivered:
	// its token was not read, or its process has not renewed it yet.
	Acknowledged bool
	// Expired is true when LeaseDeadline had passed at the read (Redis
	// clock): the entry still counts until the core reclaims it.
	Expired bool
}

// ErrNotIdle: ForgetAction found executions waiting for or holding a slot
// of the action (an expired one included, if the core could not reclaim
// it); nothing was removed.
var ErrNotIdle = errors.New("baton: action not idle")

// Waiting lists up to count waiting executions of an action in queue order,
// starting at position offset, and returns the queue length. count is 1 to
// MaxInspectPage. The page is the queue as one read saw it; executions that
// left the queue before their entries were read (just after) are left out.
func (c *Coordinator) Waiting(ctx context.Context, action string, offset, count int) ([]WaitingExecution, int64, error) {
	if err := validateRef(action); err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, fmt.Errorf("%w: offset %d: want a number >= 0", ErrInvalidArgument, offset)
	}
	if count < 1 || count > MaxInspectPage {
		return nil, 0, fmt.Errorf("%w: count %d: want 1 to %d", ErrInvalidArgument, count, MaxInspectPage)
	}
	stop := int64(offset) + int64(count) - 1
	if stop < int64(offset) {
		stop = math.MaxInt64 // offset near the top of int64: the page runs to the end
	}
	k := c.keys.Action(action)
	queueKey, waitingKey := k.Queue(), k.Waiting()
	var ids *redis.StringSliceCmd
	var length *redis.IntCmd
	var now *redis.TimeCmd
	var schema *redis.SliceCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ids = p.LRange(ctx, queueKey, int64(offset), stop)
		length = p.LLen(ctx, queueKey)
		now = p.Time(ctx)
		schema = p.HMGet(ctx, k.Meta(), "schema")
		return nil
	})
	if err == nil {
		err = checkSchema(schema.Val())
	}
	if err != nil {
		return nil, 0, fmt.Errorf("baton: waiting %s: %w", action, err)
	}
	if len(ids.Val()) == 0 {
		return []WaitingExecution{}, length.Val(), nil
	}
	vals, err := c.rdb.HMGet(ctx, waitingKey, ids.Val()...).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("baton: waiting %s: %w", action, err)
	}
	return parseWaitingPage(ids.Val(), vals, offset, now.Val()), length.Val(), nil
}

// parseWaitingPage pairs the queue's IDs with their waiting entries, read
// just after. An ID whose entry is gone by then (admitted, canceled or timed
// out in between) is left out; the others keep their positions as of the
// queue read.
func parseWaitingPage(ids []string, vals []any, offset int, now time.Time) []WaitingExecution {
	out := make([]WaitingExecution, 0, len(ids))
	for i, id := range ids {
		if i >= len(vals) {
			break
		}
		s, ok := vals[i].(string)
		if !ok {
			continue
		}
		seq, owner, err := parseWaitingValue(s)
		if err != nil {
			continue
		}
		enqueued := time.UnixMicro(seq)
		out = append(out, WaitingExecution{
			Position: int64(offset + i), ExecutionID: id, Owner: owner,
			EnqueuedAt: enqueued, Waited: max(0, now.Sub(enqueued)),
		})
	}
	return out
}

// waitingSeqDigits is how many base-62 digits of seq start a waiting value
// (see waiting_value in scripts/lib.lua).
const waitingSeqDigits = 9

// parseWaitingValue splits a waiting-hash value: the seq (µs on the Redis
// clock) as 9 base-62 digits, then the owner.
func parseWaitingValue(v string) (seq int64, owner string, err error) {
	if len(v) <= waitingSeqDigits {
		return 0, "", fmt.Errorf("baton: waiting entry %q: too short", v)
	}
	for i := 0; i < waitingSeqDigits; i++ {
		d := strings.IndexByte(base62, v[i])
		if d < 0 {
			return 0, "", fmt.Errorf("baton: waiting entry %q: %q is not a base-62 digit", v, v[i])
		}
		seq = seq*62 + int64(d)
	}
	return seq, v[waitingSeqDigits:], nil
}

// Holders lists every execution holding a slot of an action, by fencing
// token: every entry of its running set, the ones ActiveCount counts, each
// with its deadline and whether that had passed (Expired).
func (c *Coordinator) Holders(ctx context.Context, action string) ([]Holder, error) {
	if err := validateRef(action); err != nil {
		return nil, err
	}
	k := c.keys.Action(action)
	var holders *redis.MapStringStringCmd
	var running *redis.ZSliceCmd
	var now *redis.TimeCmd
	var schema *redis.SliceCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		holders = p.HGetAll(ctx, k.Holders())
		running = p.ZRangeWithScores(ctx, k.Running(), 0, -1)
		now = p.Time(ctx)
		schema = p.HMGet(ctx, k.Meta(), "schema")
		return nil
	})
	if err == nil {
		err = checkSchema(schema.Val())
	}
	if err != nil {
		return nil, fmt.Errorf("baton: holders %s: %w", action, err)
	}
	return parseHolders(holders.Val(), running.Val(), now.Val()), nil
}

// parseHolders joins the running set's entries with their holders-hash
// values. Every running entry is listed, as the core counts it; one without
// a readable holders value (which the scripts never leave) gets Token 0.
func parseHolders(holders map[string]string, running []redis.Z, now time.Time) []Holder {
	out := make([]Holder, 0, len(running))
	for _, z := range running {
		id, _ := z.Member.(string)
		h, err := parseHolderValue(holders[id])
		if err != nil {
			h = Holder{}
		}
		h.ExecutionID, h.LeaseDeadline = id, time.UnixMilli(int64(z.Score))
		h.Expired = !h.LeaseDeadline.After(now)
		out = append(out, h)
	}
	slices.SortStableFunc(out, func(a, b Holder) int { return cmp.Compare(a.Token, b.Token) })
	return out
}

// parseHolderValue reads a holders-hash value,
// "<fence>:<owner>:<since ms>:<seq>:<state>" (see holder_value in
// scripts/lib.lua), state g (granted) or h (held). ExecutionID and the
// deadline are left to the caller.
func parseHolderValue(v string) (Holder, error) {
	f := strings.Split(v, ":")
	if len(f) != 5 {
		return Holder{}, fmt.Errorf("baton: holder entry %q: want 5 fields", v)
	}
	fence, err1 := strconv.ParseInt(f[0], 10, 64)
	since, err2 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Holder{}, fmt.Errorf("baton: holder entry %q: %w", v, err)
	}
	if f[4] != "g" && f[4] != "h" {
		return Holder{}, fmt.Errorf("baton: holder entry %q: state %q: want g or h", v, f[4])
	}
	return Holder{Token: fence, Owner: f[1], Since: time.UnixMilli(since), Acknowledged: f[4] == "h"}, nil
}

// forgetKeepsMeta are the meta fields ForgetAction keeps: "state" (policy
// version, limit, last seq, fencing counter) and "limit_source", so that
// tokens stay strictly increasing and seqs ordered if the action is used
// again; "rate", "quota" and their sources, which belong to that policy
// version (scripts adopt only newer ones) and hold the throttle's state, so
// that forgetting an action neither drops its rate nor frees a burst. "due"
// (next_reclaim, indexed_due) and "totals" go: a new first script reads
// them as unset, reclaims and indexes its due time from scratch. The quota
// counter is kept too (it expires with its window).
var forgetKeepsMeta = []string{"state", "limit_source", "rate", "rate_source", "quota", "quota_source"}

// ForgetAction removes an idle action (nothing waiting, nothing in its
// running set) from the set of known actions and deletes its keys, except
// a small meta hash holding the fencing counter and last seq, which must
// never go back. It returns ErrNotIdle, removing nothing, when executions wait or
// hold slots. A slot whose deadline has passed still counts until the core
// reclaims it, so when it finds one, ForgetAction first has the core sweep
// the action (as a sweeper would: expired leases are reclaimed, unread
// grants of live processes go back to the queue) and looks again.
// The check and the deletion are one transaction: an enqueue that reaches
// Redis in between makes it retry, then see the action busy.
//
// A process that used the action before keeps it in its own record of known
// actions; if it uses the action again, the action is back in Redis but not
// in the set (listings and pack or global policy pushes miss it until some
// other process uses it; its scripts still adopt new policies).
func (c *Coordinator) ForgetAction(ctx context.Context, action string) error {
	if c.opts.ReadOnly {
		return ErrReadOnly
	}
	if err := validateRef(action); err != nil {
		return err
	}
	k := c.keys.Action(action)
	swept := false
	const attempts = 10
	for attempt := 0; attempt < attempts; attempt++ {
		err := c.rdb.Watch(ctx, func(tx *redis.Tx) error { return forgetTx(ctx, tx, k) }, k.List...)
		if errors.Is(err, redis.TxFailedErr) {
			continue // something changed the action meanwhile: look again
		}
		var busy notIdle
		if errors.As(err, &busy) {
			if busy.expired > 0 && !swept {
				// Let the core reclaim what expired, then look again.
				swept = true
				var res SweepResult
				if err := c.sweepActions(ctx, []string{action}, busy.now, &res); err != nil {
					return fmt.Errorf("baton: forget %s: reclaiming expired slots: %w", action, err)
				}
				continue
			}
			return fmt.Errorf("%w: %s", ErrNotIdle, busy.describe(action))
		}
		if err != nil {
			return fmt.Errorf("baton: forget %s: %w", action, err)
		}
		// The actions set lives in another slot (Redis Cluster), so it is
		// written by a separate command, as every cross-action index is.
		c.known.Delete(action)
		if err := c.rdb.SRem(ctx, c.keys.Actions(), action).Err(); err != nil {
			return fmt.Errorf("baton: forget %s: removing it from the actions set: %w", action, err)
		}
		return nil
	}
	return fmt.Errorf("baton: forget %s: the action kept changing; try again", action)
}

// notIdle is what forgetTx found keeping the action busy: waiting
// executions, running entries, and how many of those had expired at now (ms,
// Redis clock).
type notIdle struct{ waiting, holding, expired, now int64 }

func (n notIdle) Error() string { return "not idle" }

func (n notIdle) describe(action string) string {
	s := fmt.Sprintf("%s has %d waiting and %d holding a slot", action, n.waiting, n.holding)
	switch {
	case n.expired == 1:
		s += " (1 past its deadline, not yet reclaimed)"
	case n.expired > 1:
		s += fmt.Sprintf(" (%d past their deadlines, not yet reclaimed)", n.expired)
	}
	return s
}

// forgetTx checks, under WATCH of every action key, that the action is idle,
// then deletes its keys in one MULTI, keeping the meta fields forgetKeepsMeta.
func forgetTx(ctx context.Context, tx *redis.Tx, k keys.Action) error {
	schema, err := tx.HMGet(ctx, k.Meta(), "schema").Result()
	if err != nil {
		return err
	}
	if err := checkSchema(schema); err != nil {
		return err
	}
	now, err := tx.Time(ctx).Result()
	if err != nil {
		return err
	}
	queued, err := tx.LLen(ctx, k.Queue()).Result()
	if err != nil {
		return err
	}
	running, err := tx.ZCard(ctx, k.Running()).Result()
	if err != nil {
		return err
	}
	if queued > 0 || running > 0 {
		ms := now.UnixMilli()
		expired, err := tx.ZCount(ctx, k.Running(), "-inf", strconv.FormatInt(ms, 10)).Result()
		if err != nil {
			return err
		}
		return notIdle{waiting: queued, holding: running, expired: expired, now: ms}
	}
	kept, err := tx.HMGet(ctx, k.Meta(), forgetKeepsMeta...).Result()
	if err != nil {
		return err
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, slices.DeleteFunc(slices.Clone(k.List), func(key string) bool { return key == k.Quota() })...)
		var fields []any
		for i, f := range forgetKeepsMeta {
			if s, ok := kept[i].(string); ok {
				fields = append(fields, f, s)
			}
		}
		if len(fields) > 0 {
			p.HSet(ctx, k.Meta(), fields...)
		}
		return nil
	})
	return err
}

// checkSchema is the scripts' key-schema check for the readers that read an
// action's keys directly: vals is HMGET meta schema. Absent, or this
// version's number, the keys are in the form this version reads.
func checkSchema(vals []any) error {
	if len(vals) == 0 {
		return nil
	}
	v, ok := vals[0].(string)
	if !ok || v == strconv.Itoa(scripts.KeySchema) {
		return nil
	}
	return fmt.Errorf("%w: key schema %s, and this version of Baton reads schema %d; upgrade this process",
		ErrKeySchema, v, scripts.KeySchema)
}

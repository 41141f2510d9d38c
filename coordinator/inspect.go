package coordinator

import (
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

// Holder is one execution holding a slot of an action.
type Holder struct {
	// ExecutionID is the execution's ID.
	ExecutionID string
	// Token is its fencing token.
	Token int64
	// Owner is the Coordinator (process) that holds it.
	Owner string
	// Since is when the slot was granted (Redis clock).
	Since time.Time
	// LeaseDeadline is when the lease expires unless renewed (Redis clock).
	LeaseDeadline time.Time
	// Acknowledged is false while a grant waits for its waiter's process.
	Acknowledged bool
}

// ErrNotIdle: ForgetAction found executions waiting for or holding a slot
// of the action; nothing was removed.
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
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ids = p.LRange(ctx, queueKey, int64(offset), stop)
		length = p.LLen(ctx, queueKey)
		now = p.Time(ctx)
		return nil
	})
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

// Holders lists the executions holding a slot of an action with an
// unexpired lease (those ActiveCount counts), by fencing token.
func (c *Coordinator) Holders(ctx context.Context, action string) ([]Holder, error) {
	if err := validateRef(action); err != nil {
		return nil, err
	}
	k := c.keys.Action(action)
	var holders *redis.MapStringStringCmd
	var running *redis.ZSliceCmd
	var now *redis.TimeCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		holders = p.HGetAll(ctx, k.Holders())
		running = p.ZRangeWithScores(ctx, k.Running(), 0, -1)
		now = p.Time(ctx)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("baton: holders %s: %w", action, err)
	}
	return parseHolders(holders.Val(), running.Val(), now.Val()), nil
}

// parseHolders joins the holders hash with the running set's deadlines,
// keeping entries whose lease has not expired at now.
func parseHolders(holders map[string]string, running []redis.Z, now time.Time) []Holder {
	out := []Holder{}
	for _, z := range running {
		id, _ := z.Member.(string)
		deadline := time.UnixMilli(int64(z.Score))
		if !deadline.After(now) {
			continue
		}
		h, err := parseHolderValue(holders[id])
		if err != nil {
			continue // no holder entry: a script is between its two writes, or Redis lost one
		}
		h.ExecutionID, h.LeaseDeadline = id, deadline
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Holder) int { return cmpInt64(a.Token, b.Token) })
	return out
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseHolderValue reads a holders-hash value,
// "<fence>:<owner>:<since ms>:<seq>:<state>" (see holder_value in
// scripts/lib.lua). ExecutionID and LeaseDeadline are left to the caller.
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
	return Holder{Token: fence, Owner: f[1], Since: time.UnixMilli(since), Acknowledged: f[4] == "h"}, nil
}

// forgetKeepsMeta are the meta fields ForgetAction keeps: the fencing
// counter and the last seq, so that tokens stay strictly increasing and
// seqs stay ordered if the action is used again.
var forgetKeepsMeta = []string{"fence", "seq"}

// ForgetAction removes an idle action (nothing waiting, no unexpired lease)
// from the set of known actions and deletes its keys, except the fencing
// counter and last seq (a small meta hash), which must never go back. It
// returns ErrNotIdle, removing nothing, when executions wait or hold slots.
// The check and the deletion are one transaction: an enqueue that reaches
// Redis in between makes it retry, then see the action busy.
//
// A process that used the action before keeps it in its own record of known
// actions; if it uses the action again, the action is back in Redis but not
// in the set (listings and pack or global policy pushes miss it until some
// other process uses it; its scripts still adopt new policies).
func (c *Coordinator) ForgetAction(ctx context.Context, action string) error {
	if err := validateRef(action); err != nil {
		return err
	}
	k := c.keys.Action(action)
	const attempts = 10
	for attempt := 0; attempt < attempts; attempt++ {
		err := c.rdb.Watch(ctx, func(tx *redis.Tx) error { return c.forgetTx(ctx, tx, k) }, k.List...)
		if errors.Is(err, redis.TxFailedErr) {
			continue // something changed the action meanwhile: look again
		}
		var busy notIdle
		if errors.As(err, &busy) {
			return fmt.Errorf("%w: %s has %d waiting and %d holding a slot", ErrNotIdle, action, busy.waiting, busy.holding)
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

// notIdle is what forgetTx found keeping the action busy.
type notIdle struct{ waiting, holding int64 }

func (n notIdle) Error() string { return "not idle" }

// forgetTx checks, under WATCH of every action key, that the action is idle,
// then deletes its keys in one MULTI, keeping the meta fields forgetKeepsMeta.
func (c *Coordinator) forgetTx(ctx context.Context, tx *redis.Tx, k keys.Action) error {
	queueKey, runningKey, metaKey := k.Queue(), k.Running(), k.Meta()
	now, err := tx.Time(ctx).Result()
	if err != nil {
		return err
	}
	queued, err := tx.LLen(ctx, queueKey).Result()
	if err != nil {
		return err
	}
	live, err := tx.ZCount(ctx, runningKey, "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf").Result()
	if err != nil {
		return err
	}
	if queued > 0 || live > 0 {
		return notIdle{waiting: queued, holding: live}
	}
	kept, err := tx.HMGet(ctx, metaKey, forgetKeepsMeta...).Result()
	if err != nil {
		return err
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, k.List...)
		var fields []any
		for i, f := range forgetKeepsMeta {
			if s, ok := kept[i].(string); ok {
				fields = append(fields, f, s)
			}
		}
		if len(fields) > 0 {
			p.HSet(ctx, metaKey, fields...)
		}
		return nil
	})
	return err
}

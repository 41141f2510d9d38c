package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// SweepResult counts what one sweep pass did.
type SweepResult struct {
	// Visited counts actions claimed from the sweep index.
	Visited int
	// Reclaimed counts slots taken back from expired leases and grants.
	Reclaimed int
	// Granted counts waiters admitted into the freed slots.
	Granted int
	// Abandoned counts waiters of dead processes dropped from queue heads.
	Abandoned int
}

// maxSweepRounds bounds one pass: SweepBatch actions per round.
const maxSweepRounds = 10

// Sweep runs one sweep pass: it claims the actions whose due time has come
// from the sweep index, reclaims their expired leases and unacknowledged
// grants, and grants the freed slots. Its cost grows with what is due, not
// with the number of actions or waiters. Many processes may sweep at once;
// each due action is visited by one of them.
func (c *Coordinator) Sweep(ctx context.Context) (SweepResult, error) {
	if c.opts.ReadOnly {
		return SweepResult{}, ErrReadOnly
	}
	var res SweepResult
	for round := 0; round < maxSweepRounds; round++ {
		now, refs, err := scripts.ClaimDue(ctx, c.run, c.keys, c.opts.SweepBatch)
		if err != nil {
			return res, fmt.Errorf("baton: sweep: claiming due actions: %w", err)
		}
		if err := c.sweepActions(ctx, refs, now, &res); err != nil {
			return res, err
		}
		if len(refs) < c.opts.SweepBatch {
			break
		}
	}
	return res, nil
}

// sweepActions visits the claimed actions in one pipeline of sweep.lua
// calls, then puts those with something still pending back in the index
// with one ZADD: three round trips a pass, however many actions are due.
func (c *Coordinator) sweepActions(ctx context.Context, refs []string, now int64, res *SweepResult) error {
	var valid []string
	for _, ref := range refs {
		if limits.ValidateRef(ref) != nil {
			c.log.Warn("baton: sweep: dropping a bad ref from the index", slog.String("action", ref))
			continue
		}
		valid = append(valid, ref)
	}
	if len(valid) == 0 {
		return nil
	}
	ks := make([]keys.Action, len(valid))
	for i, ref := range valid {
		ks[i] = c.keys.Action(ref)
	}
	replies, errs := scripts.SweepAll(ctx, c.rdb, ks, c.opts.AckTimeout)
	var again []redis.Z
	var firstErr error
	for i, ref := range valid {
		if errs[i] != nil {
			// Put it back so that a later pass retries it.
			again = append(again, redis.Z{Score: float64(now + 1000), Member: ref})
			if firstErr == nil {
				firstErr = fmt.Errorf("baton: sweep %s: %w", ref, errs[i])
			}
			continue
		}
		r := replies[i]
		res.Visited++
		res.Reclaimed += int(r.Reclaimed)
		res.Granted += int(r.Granted)
		res.Abandoned += int(r.Abandoned)
		if r.Due > 0 {
			again = append(again, redis.Z{Score: float64(r.Due), Member: ref})
		}
		if r.Wake > 0 {
			c.armTick(ref, r.Wake) // a throttled head: admit it when its token comes
		}
	}
	if len(again) > 0 {
		if err := c.rdb.ZAddLT(context.WithoutCancel(ctx), c.keys.Sweep(), again...).Err(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("baton: sweep: re-indexing: %w", err)
		}
	}
	return firstErr
}

// sweepLoop runs Sweep every SweepInterval until Close.
func (c *Coordinator) sweepLoop() {
	c.every(c.opts.SweepInterval, func() {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		res, err := c.Sweep(ctx)
		if err != nil {
			c.log.Warn("baton: sweep", slog.Any("error", err))
		} else if res.Reclaimed+res.Abandoned > 0 {
			c.log.Info("baton: sweep", slog.Int("visited", res.Visited), slog.Int("reclaimed", res.Reclaimed),
				slog.Int("granted", res.Granted), slog.Int("abandoned", res.Abandoned))
		}
	})
}

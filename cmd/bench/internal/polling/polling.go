// Package polling is the limiter people write by hand, run as the bench's
// baseline: INCR a counter; over the limit, DECR it, sleep and try again.
// It keeps the limit but not the order, and a freed slot waits for the next
// poll to be noticed.
package polling

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
)

// Limiter is the polling limiter. Its Grant's Seq is the submit time and
// its Token the admission time (host clock, ns), so that the bench can
// count how often a later request overtook an earlier one.
type Limiter struct {
	// Redis holds the counters.
	Redis redis.UniversalClient
	// Prefix starts every counter's key.
	Prefix string
	// Limit is the most holders per action.
	Limit int64
	// Interval is the sleep between polls. Defaults to 10ms.
	Interval time.Duration
}

// Key is the counter of one action.
func (p Limiter) Key(action string) string { return p.Prefix + ":poll:{" + action + "}" }

// Acquire polls until a slot is free or ctx ends.
func (p Limiter) Acquire(ctx context.Context, action, _ string) (loadgen.Grant, error) {
	interval := p.Interval
	if interval <= 0 {
		interval = 10 * time.Millisecond
	}
	key := p.Key(action)
	submitted := time.Now().UnixNano()
	for {
		n, err := p.Redis.Incr(ctx, key).Result()
		if err != nil {
			return loadgen.Grant{}, err
		}
		if n <= p.Limit {
			release := func(ctx context.Context) error { return p.Redis.Decr(ctx, key).Err() }
			return loadgen.Grant{Seq: submitted, Token: time.Now().UnixNano(), Release: release}, nil
		}
		if err := p.Redis.Decr(ctx, key).Err(); err != nil {
			return loadgen.Grant{}, err
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return loadgen.Grant{}, ctx.Err()
		}
	}
}

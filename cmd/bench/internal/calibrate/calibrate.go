// Package calibrate measures what one Redis can do for the bench's clients:
// PING and a trivial one-key EVALSHA per second, from the same number of
// concurrent clients and over the same connection pool settings as the run.
// From these the report derives the ceiling of admissions per second.
package calibrate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// trivial is the one-key script whose rate is the ceiling's yardstick.
var trivial = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// Result is one calibration.
type Result struct {
	// Clients is the number of concurrent clients.
	Clients int `json:"clients"`
	// PingPerS is PINGs per second.
	PingPerS float64 `json:"ping_ops_per_s"`
	// EvalshaPerS is trivial one-key EVALSHA calls per second.
	EvalshaPerS float64 `json:"evalsha_ops_per_s"`
	// Duration is how long each measurement ran.
	Duration time.Duration `json:"duration_ns"`
}

// Measure runs PING and then EVALSHA from clients goroutines for d each (and
// at most maxOps per client), on keys under prefix.
func Measure(ctx context.Context, rdb redis.UniversalClient, clients int, d time.Duration, maxOps int, prefix string) (Result, error) {
	if err := trivial.Load(ctx, rdb).Err(); err != nil {
		return Result{}, fmt.Errorf("calibrate: loading script: %w", err)
	}
	res := Result{Clients: clients, Duration: d}
	var err error
	res.PingPerS, err = rate(ctx, clients, d, maxOps, func(ctx context.Context, _ int) error {
		return rdb.Ping(ctx).Err()
	})
	if err != nil {
		return res, fmt.Errorf("calibrate: PING: %w", err)
	}
	res.EvalshaPerS, err = rate(ctx, clients, d, maxOps, func(ctx context.Context, i int) error {
		key := fmt.Sprintf("%s:calibrate:%d", prefix, i)
		return rdb.EvalSha(ctx, trivial.Hash(), []string{key}).Err()
	})
	if err != nil {
		return res, fmt.Errorf("calibrate: EVALSHA: %w", err)
	}
	keys := make([]string, clients)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s:calibrate:%d", prefix, i)
	}
	rdb.Del(ctx, keys...)
	return res, nil
}

// rate runs op in a closed loop from clients goroutines and returns ops/s.
func rate(ctx context.Context, clients int, d time.Duration, maxOps int, op func(context.Context, int) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Go(func() {
			for n := 0; n < maxOps && ctx.Err() == nil; n++ {
				if err := op(ctx, i); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}

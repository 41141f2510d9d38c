package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

const policyVersionField = "_version"

// SetConcurrencyLimit sets the limit of a scope: limits.Action(ref),
// limits.Pack(name) or limits.Global(). n >= 0 is a count (0 pauses: nothing
// is admitted, the queue still accepts); limits.Unlimited lifts the limits of
// less specific scopes. The most specific scope that sets a limit wins.
//
// The change is applied to every known action in scope before it returns
// (raising a limit admits waiters at once), and every other Coordinator
// picks it up within its PolicyRefresh.
func (c *Coordinator) SetConcurrencyLimit(ctx context.Context, scope limits.Scope, n int) error {
	if err := scope.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := limits.ValidateLimit(n); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.changePolicy(ctx, scope, func(p redis.Pipeliner) {
		p.HSet(ctx, c.keys.Policies(), scope.String(), n)
	})
}

// ClearConcurrencyLimit removes the limit of a scope, so the next less
// specific scope's limit applies (or none: unlimited).
func (c *Coordinator) ClearConcurrencyLimit(ctx context.Context, scope limits.Scope) error {
	if err := scope.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.changePolicy(ctx, scope, func(p redis.Pipeliner) {
		p.HDel(ctx, c.keys.Policies(), scope.String())
	})
}

// SetRateLimit sets the rate (throttle) of a scope: limits.Action(ref),
// limits.Pack(name) or limits.Global(). The most specific scope that sets a
// rate applies to an action, whatever scope its concurrency limit comes
// from; a pack or global rate applies to each action on its own (it is a
// per-action default, not a budget the actions share).
//
// Executions over the rate wait in the action's FIFO queue: the head is
// admitted when it has both a concurrency slot and a rate token. A token is
// taken only by an admission. The change is in force as SetConcurrencyLimit's.
func (c *Coordinator) SetRateLimit(ctx context.Context, scope limits.Scope, rate limits.Rate) error {
	if err := scope.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := rate.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.changePolicy(ctx, scope, func(p redis.Pipeliner) {
		p.HSet(ctx, c.keys.Policies(), limits.RateField+scope.String(), limits.FormatRate(rate))
	})
}

// ClearRateLimit removes the rate of a scope, so the next less specific
// scope's rate applies (or none).
func (c *Coordinator) ClearRateLimit(ctx context.Context, scope limits.Scope) error {
	if err := scope.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.changePolicy(ctx, scope, func(p redis.Pipeliner) {
		p.HDel(ctx, c.keys.Policies(), limits.RateField+scope.String())
	})
}

// SetQuota sets the quota of a scope: at most q.Limit executions accepted
// per calendar window (UTC minute, hour or day on the Redis clock), per
// action. A request over it fails at once with a *QuotaError
// (ErrQuotaExceeded) and nothing is stored. Precedence and run-time changes
// are as for SetRateLimit.
func (c *Coordinator) SetQuota(ctx context.Context, scope limits.Scope, q limits.Quota) error {
	if err := scope.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := q.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.changePolicy(ctx, scope, func(p redis.Pipeliner) {
		p.HSet(ctx, c.keys.Policies(), limits.QuotaField+scope.String(), limits.FormatQuota(q))
	})
}

// ClearQuota removes the quota of a scope, so the next less specific
// scope's quota applies (or none).
func (c *Coordinator) ClearQuota(ctx context.Context, scope limits.Scope) error {
	if err := scope.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.changePolicy(ctx, scope, func(p redis.Pipeliner) {
		p.HDel(ctx, c.keys.Policies(), limits.QuotaField+scope.String())
	})
}

// Policies reads every policy set, fresh from Redis.
func (c *Coordinator) Policies(ctx context.Context) (limits.Policies, error) {
	p, err := c.readPolicies(ctx)
	if err != nil {
		return p, err
	}
	c.storePolicies(p)
	return p, nil
}

func (c *Coordinator) readPolicies(ctx context.Context) (limits.Policies, error) {
	m, err := c.rdb.HGetAll(ctx, c.keys.Policies()).Result()
	if err != nil {
		return limits.Policies{}, fmt.Errorf("baton: reading policies: %w", err)
	}
	return c.parsePolicies(m), nil
}

// changePolicy writes one change and the version bump in one transaction,
// reads back the whole policy set as of that version, and applies it to the
// known actions in scope.
func (c *Coordinator) changePolicy(ctx context.Context, scope limits.Scope, change func(redis.Pipeliner)) error {
	if c.opts.ReadOnly {
		return ErrReadOnly
	}
	var all *redis.MapStringStringCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		change(p)
		p.HIncrBy(ctx, c.keys.Policies(), policyVersionField, 1)
		all = p.HGetAll(ctx, c.keys.Policies())
		return nil
	})
	if err != nil {
		return fmt.Errorf("baton: writing policy %s: %w", scope, err)
	}
	p := c.parsePolicies(all.Val())
	c.storePolicies(p)

	var refs []string
	if scope.Kind() == limits.KindAction {
		refs = []string{scope.Name()}
	} else {
		members, err := c.rdb.SMembers(ctx, c.keys.Actions()).Result()
		if err != nil {
			return fmt.Errorf("baton: listing actions for policy %s: %w", scope, err)
		}
		for _, ref := range members {
			if scope.Kind() == limits.KindGlobal || limits.PackOf(ref) == scope.Name() {
				refs = append(refs, ref)
			}
		}
	}
	for _, ref := range refs {
		if err := c.applyPolicy(ctx, p, ref); err != nil {
			return err
		}
	}
	return nil
}

func (c *Coordinator) applyPolicy(ctx context.Context, p limits.Policies, ref string) error {
	if limits.ValidateRef(ref) != nil {
		return nil // not an action of ours; the index may hold anything
	}
	r, err := scripts.ApplyPolicy(ctx, c.run, c.keys.Action(ref), resolvePolicy(p, ref, p.Version), c.opts.AckTimeout)
	if err != nil {
		return fmt.Errorf("baton: applying policy to %s: %w", ref, err)
	}
	c.schedule(ctx, ref, r.Due, r.Wake)
	return nil
}

func (c *Coordinator) parsePolicies(m map[string]string) limits.Policies {
	p := limits.Policies{Limits: map[limits.Scope]int{}, Rates: map[limits.Scope]limits.Rate{}, Quotas: map[limits.Scope]limits.Quota{}}
	for field, value := range m {
		if field == policyVersionField {
			p.Version, _ = strconv.ParseInt(value, 10, 64)
			continue
		}
		if rest, ok := strings.CutPrefix(field, limits.RateField); ok {
			scope, err := limits.ParseScope(rest)
			if err == nil {
				var r limits.Rate
				if r, err = limits.ParseRate(value); err == nil {
					p.Rates[scope] = r
					continue
				}
			}
			c.log.Warn("baton: ignoring a bad rate policy", slog.String("field", field), slog.String("value", value), slog.Any("error", err))
			continue
		}
		if rest, ok := strings.CutPrefix(field, limits.QuotaField); ok {
			scope, err := limits.ParseScope(rest)
			if err == nil {
				var q limits.Quota
				if q, err = limits.ParseQuota(value); err == nil {
					p.Quotas[scope] = q
					continue
				}
			}
			c.log.Warn("baton: ignoring a bad quota policy", slog.String("field", field), slog.String("value", value), slog.Any("error", err))
			continue
		}
		scope, err := limits.ParseScope(field)
		if err != nil {
			c.log.Warn("baton: ignoring a policy with a bad scope", slog.String("scope", field))
			continue
		}
		n, err := limits.ParseLimit(value)
		if err != nil {
			c.log.Warn("baton: ignoring a policy with a bad limit", slog.String("scope", field), slog.String("limit", value))
			continue
		}
		p.Limits[scope] = n
	}
	return p
}

// storePolicies replaces the cache unless it already holds a newer version.
func (c *Coordinator) storePolicies(p limits.Policies) {
	for {
		cur := c.policies.Load()
		if cur.Version > p.Version {
			return
		}
		if c.policies.CompareAndSwap(cur, &p) {
			return
		}
	}
}

// policyLoop keeps the policy cache current: one HGET of the version every
// PolicyRefresh, and a full read when it changed. On a change it renews the
// actions this process waits on, which carries the new limit to them.
func (c *Coordinator) policyLoop() {
	c.refreshPolicies()
	c.every(c.opts.PolicyRefresh, func() {
		if c.refreshPolicies() {
			c.heartbeat()
		}
	})
}

func (c *Coordinator) refreshPolicies() (changed bool) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	v, err := c.rdb.HGet(ctx, c.keys.Policies(), policyVersionField).Int64()
	if err != nil && err != redis.Nil {
		c.log.Warn("baton: checking policy version", slog.Any("error", err))
		return false
	}
	cur := c.policies.Load()
	if v == cur.Version {
		return false
	}
	if v < cur.Version {
		// Either a change was cached after the version was read, or the
		// policy hash went back (flushed, or a failover lost writes). Read
		// it whole: only if it is still older is Redis's older set the
		// truth, and it replaces the cache at once (never an empty cache).
		p, err := c.readPolicies(ctx)
		if err != nil {
			c.log.Warn("baton: refreshing policies", slog.Any("error", err))
			return false
		}
		if p.Version < cur.Version {
			c.policies.CompareAndSwap(cur, &p)
		} else {
			c.storePolicies(p)
		}
		c.policiesLoaded.Store(true)
		return true
	}
	if _, err := c.Policies(ctx); err != nil {
		c.log.Warn("baton: refreshing policies", slog.Any("error", err))
		return false
	}
	c.policiesLoaded.Store(true)
	return true
}

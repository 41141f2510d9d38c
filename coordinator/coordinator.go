// Package coordinator is the library executors link to share strict-FIFO
// concurrency limits per action through one Redis.
//
// Before an executor starts an execution of an action it calls
// EnqueueAndWait. With a free slot and nobody waiting, that is one script
// call. Otherwise the execution waits in the action's FIFO queue in Redis;
// when a running execution is released, the same script grants its slot to
// the oldest waiter, whose process wakes from a BLPOP on that waiter's grant
// key. Nothing polls.
//
// A process waits on at most one connection per action: grants for an action
// arrive in FIFO order, so it blocks only on the grant key of its own oldest
// waiter of that action. Slots are held under leases that one heartbeat per
// process and action renews; a crashed process's slots come back after
// LeaseTTL, and grants its process never acknowledged after AckTimeout.
//
// Every deadline is on the Redis clock. Every script is idempotent per
// execution ID, because go-redis retries commands.
package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// Coordinator admits executions of actions under their concurrency limits.
// It is safe for concurrent use. Create one per process with New and Close
// it when done.
type Coordinator struct {
	rdb        redis.UniversalClient
	waitRdb    redis.UniversalClient // blocking waits; a pool of our own when we could make one
	ownWait    bool                  // waitRdb is ours to close
	run        *scripts.Batcher
	opts       Options
	keys       keys.Keys
	owner      string
	ownerClaim string // value of the owner's registry key; "" when the ID is a long random one
	log        *slog.Logger

	ctx    context.Context // ends when Close finishes
	cancel context.CancelFunc
	stop   chan struct{} // closed when Close starts
	wg     sync.WaitGroup

	amu     sync.Mutex // guards closed and actions; taken before any action's mutex
	closed  bool
	actions map[string]*action

	waitConns chan struct{} // one token per connection allowed to block
	waitQueue atomic.Int32  // wait loops queued for a token

	policies       atomic.Pointer[limits.Policies]
	policiesLoaded atomic.Bool // the cache was read from Redis at least once
	loadMu         sync.Mutex
	known          sync.Map // action refs already added to the actions set
	ticks          ticks    // timers for throttled queue heads (throttle.go)

	closeOnce sync.Once
}

// New returns a Coordinator that keeps its state in rdb. It claims a short
// owner ID in Redis (falling back to a longer random one if Redis does not
// answer within 2 s, so New does not fail for that) and starts the
// background heartbeat, policy refresh and (unless SweepInterval < 0)
// sweeper; Close stops them.
func New(rdb redis.UniversalClient, opts Options) (*Coordinator, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidArgument)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.WithDefaults()
	if rt := readTimeout(rdb); opts.WaitReplicas > 0 && rt > 0 && opts.WaitTimeout >= rt {
		return nil, fmt.Errorf("%w: Options.WaitTimeout = %v: must be below the client's ReadTimeout (%v), or every WAIT that runs out would look like a dead connection",
			ErrInvalidArgument, opts.WaitTimeout, rt)
	}
	k := keys.New(opts.Prefix)
	owner, claim := "", ""
	if !opts.ReadOnly {
		var err error
		if owner, claim, err = claimOwner(rdb, k, opts.Logger); err != nil {
			return nil, fmt.Errorf("baton: owner ID: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Coordinator{
		rdb:        rdb,
		run:        scripts.NewBatcher(rdb, opts.ScriptConns, scripts.Durability{Replicas: opts.WaitReplicas, Timeout: opts.WaitTimeout}),
		opts:       opts,
		keys:       k,
		owner:      owner,
		ownerClaim: claim,
		log:        opts.Logger.With(slog.String("owner", owner)),
		ctx:        ctx,
		cancel:     cancel,
		stop:       make(chan struct{}),
		actions:    map[string]*action{},
		waitConns:  make(chan struct{}, opts.MaxWaitConns),
	}
	if opts.ReadOnly {
		c.policies.Store(&limits.Policies{})
		return c, nil
	}
	if opts.WaitClient != nil {
		c.waitRdb = opts.WaitClient
	} else {
		c.waitRdb, c.ownWait = waitClient(rdb, opts.MaxWaitConns)
	}
	func() { // Functions or EVAL scripts: find out now, not on the first admission
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c.run.Probe(ctx)
	}()
	c.policies.Store(&limits.Policies{})
	c.start(c.heartbeatLoop)
	c.start(c.policyLoop)
	if opts.SweepInterval > 0 {
		c.start(c.sweepLoop)
	}
	return c, nil
}

// waitClient returns the client blocking waits use: for the client types
// whose options it can copy, a pool of its own of n connections with no
// command retries, so that an error (a dropped connection that may have
// eaten a grant's reply) reaches the wait loop, which then reconciles with
// Redis. Otherwise the caller's client, whose retries can hide such a loss
// until the next heartbeat finds it.
func waitClient(rdb redis.UniversalClient, n int) (redis.UniversalClient, bool) {
	switch c := rdb.(type) {
	case *redis.Client:
		o := *c.Options()
		o.MaxRetries, o.PoolSize, o.MinIdleConns, o.MaxIdleConns = -1, n, 0, n
		o.MaintNotificationsConfig = noMaintNotifications()
		return redis.NewClient(&o), true
	case *redis.ClusterClient:
		o := *c.Options()
		o.MaxRetries, o.PoolSize, o.MinIdleConns, o.MaxIdleConns = -1, n, 0, n
		o.MaintNotificationsConfig = noMaintNotifications()
		return redis.NewClusterClient(&o), true
	}
	return rdb, false
}

// noMaintNotifications turns maintenance notifications off in a copy of a
// client's options: the copy shares the original's notification setup, whose
// handlers a second client cannot register again (go-redis logs that on every
// new connection). Blocking waits need none.
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// readTimeout is the client's read timeout where its type tells (0: unknown
// or none); go-redis's default is 3 s.
func readTimeout(rdb redis.UniversalClient) time.Duration {
	var rt time.Duration
	switch c := rdb.(type) {
	case *redis.Client:
		rt = c.Options().ReadTimeout
	case *redis.ClusterClient:
		rt = c.Options().ReadTimeout
	default:
		return 0
	}
	switch {
	case rt == 0:
		return 3 * time.Second
	case rt < 0:
		return 0
	}
	return rt
}

// ownerTTL is how long a short owner ID stays reserved after its last
// renewal; it is renewed with every heartbeat round.
const ownerTTL = time.Hour

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// claimOwner names this Coordinator in Redis. The name is stored with every
// waiting execution, so it is short: 3 base-62 characters, reserved in the
// registry with SET NX so that no two live Coordinators share one. If Redis
// does not answer (within 2 s) or no free name turns up, it falls back to 8
// random base32 characters, unique without a registry but 5 bytes longer.
func claimOwner(rdb redis.UniversalClient, k keys.Keys, log *slog.Logger) (owner, claim string, err error) {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	long := strings.ToLower(base32.StdEncoding.EncodeToString(b))
	host, _ := os.Hostname()
	claim = fmt.Sprintf("host=%s pid=%d claim=%s", host, os.Getpid(), long)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for attempt := 0; attempt < 16; attempt++ {
		r := make([]byte, 3)
		if _, err := rand.Read(r); err != nil {
			return "", "", err
		}
		id := string([]byte{base62[int(r[0])%62], base62[int(r[1])%62], base62[int(r[2])%62]})
		ok, err := rdb.SetNX(ctx, k.Owner(id), claim, ownerTTL).Result()
		if err != nil {
			log.Warn("baton: no short owner ID (Redis refused or did not answer; see the error); using a long one", slog.Any("error", err))
			break
		}
		if ok {
			return id, claim, nil
		}
	}
	return long, "", nil
}

// renewOwner keeps this Coordinator's short owner ID reserved.
func (c *Coordinator) renewOwner(ctx context.Context) {
	if c.ownerClaim == "" {
		return
	}
	key := c.keys.Owner(c.owner)
	cur, err := c.rdb.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		err = c.rdb.SetNX(ctx, key, c.ownerClaim, ownerTTL).Err()
	case err == nil && cur == c.ownerClaim:
		err = c.rdb.PExpire(ctx, key, ownerTTL).Err()
	case err == nil:
		c.log.Error("baton: another process claimed this owner ID (this one paused for over an hour?)", slog.String("claim", cur))
	}
	if err != nil {
		c.log.Warn("baton: renewing the owner ID", slog.Any("error", err))
	}
}

// Owner is this Coordinator's ID, as stored in Redis beside the executions
// it waits for and holds: 3 base-62 characters reserved under
// <prefix>:owner:<id>, or 8 base32 characters if Redis was unreachable at New.
func (c *Coordinator) Owner() string { return c.owner }

// every runs fn every interval until Close starts.
func (c *Coordinator) every(interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// startUnlessClosed is start for work begun by a caller's goroutine, which
// may race with Close: once Close has begun, fn does not run, so that
// nothing runs after Close returns.
func (c *Coordinator) startUnlessClosed(fn func()) {
	c.amu.Lock()
	defer c.amu.Unlock()
	if c.closed {
		return
	}
	c.start(fn)
}

func (c *Coordinator) start(loop func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		loop()
	}()
}

// Close stops the background work, ends every waiting EnqueueAndWait with
// ErrClosed (removing those executions from their queues), and closes the
// Lost channel of every lease still held: they are no longer renewed and
// expire after LeaseTTL unless released first. When Close returns no
// background work runs. Close is safe to call twice.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.amu.Lock()
		c.closed = true
		acts := make([]*action, 0, len(c.actions))
		for _, a := range c.actions {
			acts = append(acts, a)
		}
		c.amu.Unlock()
		close(c.stop)
		c.stopTicks()

		var g sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, a := range acts {
			for _, w := range a.giveUpAll(ErrClosed) {
				g.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; g.Done() }()
					c.giveUp(w, ErrClosed)
				}()
			}
		}
		g.Wait()
		for _, a := range acts {
			a.loseLeases()
			c.wake(a)
		}
		c.wg.Wait()
		c.run.Close()
		if c.ownWait && c.waitRdb != nil {
			_ = c.waitRdb.Close()
		}
		c.cancel()
	})
	return nil
}

func (c *Coordinator) isClosed() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// action returns the local state of ref, creating it. It returns nil once
// the Coordinator is closed.
func (c *Coordinator) action(ref string) *action {
	c.amu.Lock()
	defer c.amu.Unlock()
	if c.closed {
		return nil
	}
	a := c.actions[ref]
	if a == nil {
		a = newAction(c, ref)
		c.actions[ref] = a
	}
	return a
}

// policyArgs are the caller's resolved limit, rate and quota for ref,
// passed to scripts that adopt them when they are newer than the action's.
// Before the cache was ever loaded it carries version -1, which no script
// adopts.
func (c *Coordinator) policyArgs(ref string) scripts.Policy {
	p := c.policies.Load()
	version := p.Version
	if !c.policiesLoaded.Load() {
		version = -1
	}
	return resolvePolicy(*p, ref, version)
}

// resolvePolicy resolves each kind of policy for ref on its own.
func resolvePolicy(p limits.Policies, ref string, version int64) scripts.Policy {
	n, src, ok := p.Resolve(ref)
	out := scripts.Policy{Version: version, Limit: n, Source: limits.Source(src, ok)}
	if r, src, ok := p.ResolveRate(ref); ok {
		out.Rate, out.RateSource = r, src.String()
	}
	if q, src, ok := p.ResolveQuota(ref); ok {
		out.Quota, out.QuotaSource = q, src.String()
	}
	return out
}

// ensurePolicies reads the policies once before this Coordinator's first
// script call, so that a fresh process never applies an empty cache (an
// unlimited action) to an action no process has resolved yet.
func (c *Coordinator) ensurePolicies(ctx context.Context) error {
	if c.policiesLoaded.Load() {
		return nil
	}
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	if c.policiesLoaded.Load() {
		return nil
	}
	if _, err := c.Policies(ctx); err != nil {
		return err
	}
	c.policiesLoaded.Store(true)
	return nil
}

// noteAction adds ref to the set of known actions, once per process, in the
// background: the set is an index for operators and policy changes, and may
// be briefly stale.
func (c *Coordinator) noteAction(ctx context.Context, ref string) {
	if _, seen := c.known.LoadOrStore(ref, true); seen {
		return
	}
	ctx = context.WithoutCancel(ctx)
	c.start(func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.rdb.SAdd(ctx, c.keys.Actions(), ref).Err(); err != nil {
			c.known.Delete(ref)
			c.log.Warn("baton: recording known action", slog.String("action", ref), slog.Any("error", err))
		}
	})
}

// addDue puts ref in the sweep index at due (ms), unless an earlier time is there.
func (c *Coordinator) addDue(ctx context.Context, ref string, due int64) {
	if due <= 0 {
		return
	}
	err := c.rdb.ZAddLT(context.WithoutCancel(ctx), c.keys.Sweep(), redis.Z{Score: float64(due), Member: ref}).Err()
	if err != nil {
		c.log.Warn("baton: updating sweep index", slog.String("action", ref), slog.Any("error", err))
	}
}

func validateExecution(id string) error {
	if err := limits.ValidateExecutionID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return nil
}

func validateRef(ref string) error {
	if err := limits.ValidateRef(ref); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return nil
}

func validate(ref, id string) error {
	if err := validateRef(ref); err != nil {
		return err
	}
	return validateExecution(id)
}

func parseInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

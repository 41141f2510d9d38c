package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
)

// The behavioural suite runs every test on two tiers: miniredis (fast,
// controlled clock) and a real redis-server that TestMain starts on a free
// loopback port. With BATON_REQUIRE_REDIS=1 a missing redis-server fails.

func TestMain(m *testing.M) {
	if mode := os.Getenv("BATON_CRASH_CHILD"); mode != "" {
		crashChild(mode) // a crash test's child (crash_test.go); never returns
	}
	if os.Getenv("BATON_FAULT_CHILD") != "" {
		randomFaultsChild() // TestRandomFaults's child (randomchild_test.go)
		os.Exit(0)
	}
	os.Exit(redistest.Main(m)) // stops the shared redis-server after the last test
}

// env is one test's Redis: miniredis or the shared real server under a
// prefix of its own.
type env struct {
	t      testing.TB
	tier   string
	mr     *miniredis.Miniredis // nil on the real tier
	addr   string
	prefix string
	rdb    *redis.Client
	clock  time.Time // miniredis: the frozen Redis clock
	mu     sync.Mutex
}

var prefixSeq atomic.Int64

// tiers runs fn once per tier as subtests.
func tiers(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) { fn(t, newMiniEnv(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, newRealEnv(t)) })
}

func newMiniEnv(t testing.TB) *env {
	mr := miniredis.RunT(t)
	e := &env{t: t, tier: "miniredis", mr: mr, addr: mr.Addr(), prefix: "baton"}
	e.clock = time.Now()
	mr.SetTime(e.clock)
	e.rdb = e.client()
	return e
}

func newRealEnv(t testing.TB) *env {
	srv := redistest.SharedServer(t) // skips, or fails when Required, without redis-server
	e := &env{t: t, tier: "redis", addr: srv.Addr, prefix: fmt.Sprintf("t%d", prefixSeq.Add(1))}
	e.rdb = e.client()
	return e
}

// client returns a new client of its own (its own pool), closed at cleanup.
func (e *env) client() *redis.Client {
	// Long timeouts: a CPU-starved test must not turn slowness into errors.
	rdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 64, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	e.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// advance moves the Redis clock: miniredis's frozen clock and TTLs
// together; the real server's by sleeping.
func (e *env) advance(d time.Duration) {
	if e.mr == nil {
		time.Sleep(d)
		return
	}
	e.mu.Lock()
	e.clock = e.clock.Add(d)
	e.mr.SetTime(e.clock)
	e.mu.Unlock()
	e.mr.FastForward(d)
}

// opts are test defaults: short leases and timeouts, background sweeping off
// unless a test turns it on, and the env's prefix.
// waitClient is a client for a Coordinator's blocking waits: no retries,
// as the Coordinator's own would be.
func (e *env) waitClient() *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: e.addr, MaxRetries: -1, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	e.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// opts are the options of the tests' Coordinators. The lease is long, so
// that a live process starved of CPU is not presumed dead (tests of expiry
// set their own); the logs go to t.Log.
func (e *env) opts() coordinator.Options {
	return coordinator.Options{
		Prefix:        e.prefix,
		LeaseTTL:      20 * time.Second,
		AckTimeout:    time.Second,
		QueueTimeout:  time.Minute,
		SweepInterval: -1,
		Logger:        testLogger(e.t),
	}
}

// testLogger sends a Coordinator's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger { return redistest.NewLog(t).Logger("") }

// coordinator returns a Coordinator on a client of its own, closed at cleanup.
func (e *env) coordinator(opts coordinator.Options) *coordinator.Coordinator {
	e.t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = e.prefix
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(e.t)
	}
	c, err := coordinator.New(e.client(), opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// keys lists every key under the env's prefix.
func (e *env) keys() []string {
	ks, err := e.rdb.Keys(context.Background(), e.prefix+":*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return ks
}

func (e *env) stats(c *coordinator.Coordinator, action string) coordinator.QueueStats {
	e.t.Helper()
	st, err := c.QueueStats(context.Background(), action)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// The shared waits and contexts (internal/redistest), under short names.
var (
	eventually = redistest.Eventually
	ctxT       = redistest.Context
)

const slowFloor = redistest.SlowFloor

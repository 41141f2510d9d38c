package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
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

var realRedis *redistest.Server

func TestMain(m *testing.M) {
	code := func() int {
		if mode := os.Getenv("BATON_CRASH_CHILD"); mode != "" {
			crashChild(mode) // a crash test's child (crash_test.go); never returns
		}
		if os.Getenv("BATON_FAULT_CHILD") != "" {
			randomFaultsChild() // TestRandomFaults's child (randomchild_test.go)
			return 0
		}
		if redistest.Available() {
			dir, err := os.MkdirTemp("", "baton-redis-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			realRedis, err = redistest.StartServer(dir)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer realRedis.Stop()
		} else if redistest.Required() {
			fmt.Fprintln(os.Stderr, "BATON_REQUIRE_REDIS=1 but redis-server is not on PATH")
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
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
	if realRedis == nil {
		if redistest.Required() {
			t.Fatal("BATON_REQUIRE_REDIS=1 but no redis-server")
		}
		t.Skip("redis-server not on PATH")
	}
	e := &env{t: t, tier: "redis", addr: realRedis.Addr, prefix: fmt.Sprintf("t%d", prefixSeq.Add(1))}
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
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

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

// eventually polls cond until it holds or d passes.
// eventually waits for cond. d is what the condition should take; the test
// fails only after max(d, slowFloor), so that a slow, shared machine does not
// fail it. How long it really took is logged when it took longer than d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	limit := max(d, slowFloor)
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("after %s: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(start); took > d {
		t.Logf("%s took %s (expected within %s; the machine is slow)", what, took.Round(time.Millisecond), d)
	}
}

// slowFloor is the least any wait in these tests allows before failing.
const slowFloor = 60 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var _ = strings.HasPrefix

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

// The behavioural suite runs every test on three tiers: miniredis (fast,
// controlled clock), a real redis-server shared by the test binary, and a
// real Redis Cluster of 3 masters and 3 replicas, also one per test binary
// (redistest.SharedCluster). On the real tiers each test has a key prefix
// of its own. With BATON_REQUIRE_REDIS=1 a missing redis-server, or a
// cluster that cannot start, fails the test instead of skipping it.

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

// env is one test's Redis: miniredis, or the shared real server or cluster
// under a prefix of its own.
type env struct {
	t       testing.TB
	tier    string
	mr      *miniredis.Miniredis // nil on the real tiers
	addr    string               // "" on the cluster tier
	cluster *redistest.Cluster   // nil but on the cluster tier
	prefix  string
	rdb     redis.UniversalClient
	clock   time.Time // miniredis: the frozen Redis clock
	// waitReplicas goes to opts (durableClusterEnv).
	waitReplicas int
	mu           sync.Mutex
}

var prefixSeq atomic.Int64

// tiers runs fn once per tier as subtests.
func tiers(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) { fn(t, newMiniEnv(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, newRealEnv(t)) })
	t.Run("cluster", func(t *testing.T) { fn(t, newClusterEnv(t)) })
}

// singleTiers runs fn on miniredis and the real server only, for tests
// that need one node's admin commands (CLIENT KILL, CLIENT PAUSE, DEBUG,
// FLUSHALL, a restart): on a cluster those reach one node chosen by the
// client, not the node that holds the test's keys.
func singleTiers(t *testing.T, fn func(t *testing.T, e *env)) {
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

func newClusterEnv(t testing.TB) *env {
	cl := redistest.SharedCluster(t) // skips, or fails when Required, without redis-server
	e := &env{t: t, tier: "cluster", cluster: cl, prefix: redistest.Prefix(t)}
	e.rdb = e.client()
	return e
}

// durableClusterEnv is the cluster tier with Options.WaitReplicas 1 in opts:
// every master has one replica.
func durableClusterEnv(t testing.TB) *env {
	e := newClusterEnv(t)
	e.tier, e.waitReplicas = "cluster-durable", 1
	return e
}

// client returns a new client of its own (its own pool), closed at cleanup:
// a *redis.Client, or on the cluster tier a *redis.ClusterClient.
func (e *env) client() redis.UniversalClient {
	// Long timeouts: a CPU-starved test must not turn slowness into errors.
	var rdb redis.UniversalClient
	if e.cluster != nil {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: e.cluster.Seeds(), PoolSize: 64,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
			ClusterStateReloadInterval: redistest.ClientReloadInterval})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 64, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	}
	e.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// nodeClient is a plain client of the one node the test runs on, closed at
// cleanup; the tests that need it run on singleTiers.
func (e *env) nodeClient() *redis.Client {
	if e.cluster != nil {
		e.t.Fatal("nodeClient on the cluster tier: run the test on singleTiers")
	}
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

// waitClient is a client for a Coordinator's blocking waits: no retries,
// as the Coordinator's own would be.
func (e *env) waitClient() redis.UniversalClient {
	var rdb redis.UniversalClient
	if e.cluster != nil {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: e.cluster.Seeds(), MaxRetries: -1,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
			ClusterStateReloadInterval: redistest.ClientReloadInterval})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: e.addr, MaxRetries: -1, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	}
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
		WaitReplicas:  e.waitReplicas,
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

// keys lists every key under the env's prefix (on every master of a cluster).
func (e *env) keys() []string {
	ctx := context.Background()
	cc, ok := e.rdb.(*redis.ClusterClient)
	if !ok {
		ks, err := e.rdb.Keys(ctx, e.prefix+":*").Result()
		if err != nil {
			e.t.Fatal(err)
		}
		return ks
	}
	var mu sync.Mutex
	var all []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		ks, err := n.Keys(ctx, e.prefix+":*").Result()
		mu.Lock()
		all = append(all, ks...)
		mu.Unlock()
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return all
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

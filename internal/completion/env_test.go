package completion_test

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/completion"
	"github.com/batonhq/baton/internal/redistest"
)

// Every behavioural test runs on three tiers: miniredis (fast, controlled
// clock), a real redis-server and a real Redis Cluster of 3 masters and 3
// replicas, each shared by the test binary (redistest.SharedServer,
// SharedCluster) and used under prefixes of the tests' own. On the cluster
// the completion stream and the actions live on different masters. With
// BATON_REQUIRE_REDIS=1 a missing redis-server, or a cluster that cannot
// start, fails.

func TestMain(m *testing.M) {
	// go-redis's own log lines (dial failures while a test has Redis down
	// on purpose) would bypass t.Log.
	redis.SetLogger(&logging.VoidLogger{})
	os.Exit(redistest.Main(m)) // stops the shared redis-server after the last test
}

// env is one test's Redis: miniredis or the shared real server under a
// prefix of its own.
type env struct {
	t       testing.TB
	mr      *miniredis.Miniredis // nil on the real tiers
	addr    string               // "" on the cluster tier
	cluster *redistest.Cluster   // nil but on the cluster tier
	prefix  string
	rdb     redis.UniversalClient
	log     *redistest.Log

	mu    sync.Mutex
	clock time.Time // miniredis: the frozen Redis clock
}

var prefixSeq atomic.Int64

// tiers runs fn once per tier as subtests.
func tiers(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) { fn(t, newMiniEnv(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, newRealEnv(t)) })
	t.Run("cluster", func(t *testing.T) { fn(t, newClusterEnv(t)) })
}

func newMiniEnv(t testing.TB) *env {
	e := &env{t: t, log: redistest.NewLog(t), prefix: "baton"}
	e.mr = miniredis.RunT(t)
	e.addr = e.mr.Addr()
	e.clock = time.Now()
	e.mr.SetTime(e.clock)
	e.rdb = e.client()
	return e
}

func newRealEnv(t testing.TB) *env {
	srv := redistest.SharedServer(t) // skips, or fails when Required, without redis-server
	e := &env{t: t, log: redistest.NewLog(t), addr: srv.Addr, prefix: fmt.Sprintf("t%d", prefixSeq.Add(1))}
	e.rdb = e.client()
	return e
}

func newClusterEnv(t testing.TB) *env {
	cl := redistest.SharedCluster(t) // skips, or fails when Required, without redis-server
	e := &env{t: t, log: redistest.NewLog(t), cluster: cl, prefix: redistest.Prefix(t)}
	e.rdb = e.client()
	return e
}

// client returns a new client of its own (its own pool), closed at cleanup:
// on the cluster tier a cluster client.
func (e *env) client() redis.UniversalClient {
	var rdb redis.UniversalClient
	if e.cluster != nil {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: e.cluster.Seeds(),
			ClusterStateReloadInterval: redistest.ClientReloadInterval})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: e.addr})
	}
	e.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// advance moves the Redis clock: miniredis's frozen clock; the real
// server's by sleeping.
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

// coordinator returns a Coordinator on a client of its own, logging to
// t.Log, closed at cleanup.
func (e *env) coordinator() *coordinator.Coordinator {
	e.t.Helper()
	c, err := coordinator.New(e.client(), coordinator.Options{
		Prefix:        e.prefix,
		LeaseTTL:      3 * time.Second,
		QueueTimeout:  time.Minute,
		SweepInterval: -1,
		Logger:        e.log.Logger("coordinator"),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// config is cfg with the env's prefix and a logger to t.Log.
func (e *env) config(cfg completion.Config) completion.Config {
	cfg.Prefix = e.prefix
	if cfg.Logger == nil {
		cfg.Logger = e.log.Logger("listener")
	}
	return cfg
}

// listen starts a listener for c with cfg (see config), stopped at cleanup.
func (e *env) listen(c completion.Coordinator, cfg completion.Config) *completion.Listener {
	e.t.Helper()
	l, err := completion.New(e.client(), c, e.config(cfg))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := l.Start(ctxT(e.t)); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(l.Stop)
	return l
}

func (e *env) stream() string { return coordinator.CompletedStream(e.prefix) }

func (e *env) publish(action, id, status string) {
	e.t.Helper()
	if err := coordinator.PublishCompletionWithPrefix(ctxT(e.t), e.rdb, e.prefix, action, id, status); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) stats(c *coordinator.Coordinator, action string) coordinator.QueueStats {
	e.t.Helper()
	st, err := c.QueueStats(ctxT(e.t), action)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// pending is the number of entries of group read but not acknowledged.
func (e *env) pending(group string) int64 {
	e.t.Helper()
	p, err := e.rdb.XPending(ctxT(e.t), e.stream(), group).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Count
}

// consumers lists the consumers of group.
func (e *env) consumers(group string) []string {
	e.t.Helper()
	cs, err := e.rdb.XInfoConsumers(ctxT(e.t), e.stream(), group).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// counts counts a listener's outcomes (its OnEvent).
type counts struct {
	mu sync.Mutex
	n  map[completion.Outcome]int
}

func (c *counts) add(o completion.Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[completion.Outcome]int{}
	}
	c.n[o]++
}

func (c *counts) get(o completion.Outcome) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[o]
}

func (c *counts) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.n)
}

// The shared waits and contexts (internal/redistest), under short names.
var (
	eventually = redistest.Eventually
	ctxT       = redistest.Context
)

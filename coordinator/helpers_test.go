package coordinator_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// Helpers shared by the fault tests (lostreply_test.go, randomfaults_test.go).

// testLog is a Coordinator logger that writes Warn and above to t.Log and
// counts the records whose message contains a watched string. It stops
// writing once the test's cleanups reach it (the Coordinators close first:
// their cleanups were registered later).
type testLog struct {
	t     testing.TB
	watch string
	hits  atomic.Int64
	mu    sync.Mutex
	done  bool
}

func newTestLog(t testing.TB, watch string) *testLog {
	l := &testLog{t: t, watch: watch}
	t.Cleanup(func() { l.mu.Lock(); l.done = true; l.mu.Unlock() })
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	if l.watch != "" && strings.Contains(s, l.watch) {
		l.hits.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(s)
	}
	return len(p), nil
}

func (l *testLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// redisClient is one entry of CLIENT LIST.
type redisClient map[string]string

// clientList reads CLIENT LIST TYPE normal.
func clientList(ctx context.Context, rdb *redis.Client) ([]redisClient, error) {
	s, err := rdb.Do(ctx, "CLIENT", "LIST", "TYPE", "normal").Text()
	if err != nil {
		return nil, err
	}
	var out []redisClient
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		c := redisClient{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			c[k] = v
		}
		out = append(out, c)
	}
	return out, nil
}

// blockedBLPOPs returns the IDs of the connections blocked in a BLPOP now.
func blockedBLPOPs(ctx context.Context, rdb *redis.Client) ([]string, error) {
	cs, err := clientList(ctx, rdb)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, c := range cs {
		if c["cmd"] == "blpop" && strings.Contains(c["flags"], "b") {
			ids = append(ids, c["id"])
		}
	}
	return ids, nil
}

// pauser freezes every connection a client dials (reads and writes block)
// while it is paused: from Redis's side the process looks stopped, as under
// SIGSTOP, except that its local timers keep running. Set it as the
// client's Options.Dialer; go-redis copies the dialer into the
// Coordinator's own pool of blocking connections, so those freeze too.
type pauser struct {
	mu     sync.Mutex
	resume chan struct{} // nil while running; closed when a pause ends
}

func (p *pauser) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.wait()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &pausedConn{Conn: c, p: p}, nil
}

// pause freezes the connections for d, in the background.
func (p *pauser) pause(d time.Duration) {
	p.mu.Lock()
	if p.resume != nil {
		p.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	p.resume = ch
	p.mu.Unlock()
	time.AfterFunc(d, func() {
		p.mu.Lock()
		p.resume = nil
		p.mu.Unlock()
		close(ch)
	})
}

func (p *pauser) wait() {
	p.mu.Lock()
	ch := p.resume
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

type pausedConn struct {
	net.Conn
	p *pauser
}

func (c *pausedConn) Read(b []byte) (int, error) {
	c.p.wait()
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.p.wait() // the bytes arrived during a pause: handed over only when it ends
	}
	return n, err
}

func (c *pausedConn) Write(b []byte) (int, error) {
	c.p.wait()
	return c.Conn.Write(b)
}

// readPolicies makes each Coordinator's policy cache current. A policy
// change reaches other processes within PolicyRefresh, and until then an
// action that a process is the first to use takes the policy that process
// has cached (docs/design.md, "Limits"): if its background refresh ran
// between two of a test's changes, it holds the first without the second.
// Tests that set policies through one Coordinator after creating others,
// and hold every Coordinator to them from the first admission on, read them
// into the others first.
func readPolicies(t *testing.T, cs ...*coordinator.Coordinator) {
	t.Helper()
	for _, c := range cs {
		if _, err := c.Policies(ctxT(t)); err != nil {
			t.Fatalf("reading the policies into %s: %v", c.Owner(), err)
		}
	}
}

// quotaWindowRoom makes sure the quota window w of the Redis clock has at
// least room left, so that every count a test makes falls in one window. A
// real server's clock runs on: a test that began a moment before a UTC
// minute (or hour, or day) ended would see its quota count start again from
// 0 midway, so on the real tiers it waits. miniredis's clock starts at the
// real time and moves only when the test advances it, which can cross a
// window too (TestQuotaCounts did, 120 ms before a minute ended): there it
// advances the clock to the next window.
func (e *env) quotaWindowRoom(t testing.TB, w limits.Window, room time.Duration) {
	if e.mr == nil {
		waitWindowRoom(t, e.rdb, w, room)
		return
	}
	// miniredis: its clock is frozen at the env's start (real time) and moves
	// only by advance, so the window's start is reached by advancing to it.
	e.mu.Lock()
	now := e.clock
	e.mu.Unlock()
	if left := w.Start(now).Add(w.Duration()).Sub(now); left < room {
		t.Logf("the quota %s ends in %v: the Redis clock moves to the next one", w, left)
		e.advance(left + 10*time.Millisecond)
	}
}

// waitWindowRoom is quotaWindowRoom on a real server's client.
func waitWindowRoom(t testing.TB, rdb redis.UniversalClient, w limits.Window, room time.Duration) {
	t.Helper()
	now, err := rdb.Time(ctxT(t)).Result()
	if err != nil {
		t.Fatalf("reading the Redis clock: %v", err)
	}
	if left := w.Start(now).Add(w.Duration()).Sub(now); left < room {
		t.Logf("the quota %s ends in %v: the test starts in the next one", w, left)
		time.Sleep(left + 10*time.Millisecond) // to a known instant of the clock, not a guess
	}
}

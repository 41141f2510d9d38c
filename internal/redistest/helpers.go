package redistest

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The helpers test packages share: one shared real server per test binary,
// waits that do not fail a slow machine, contexts and loggers for tests.

// SharedServer returns the test binary's redis-server, starting it on the
// first call; Main stops it after the last test. It skips the test when
// redis-server is missing, or fails it when Required. Tests share it under
// key prefixes of their own.
func SharedServer(tb testing.TB) *Server {
	tb.Helper()
	need(tb)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil && shared.serverErr == nil {
		shared.serverDir, shared.serverErr = os.MkdirTemp("", "baton-redis-")
		if shared.serverErr == nil {
			shared.server, shared.serverErr = StartServer(shared.serverDir)
		}
	}
	if shared.serverErr != nil {
		tb.Fatalf("redistest: the shared redis-server could not start: %v", shared.serverErr)
	}
	return shared.server
}

// SlowFloor is the least any wait in the tests allows before failing: on
// a small, shared machine a test waits for its event, it does not time it.
const SlowFloor = 60 * time.Second

// Eventually waits for cond. d is what the condition should take; the test
// fails only after max(d, SlowFloor), and how long it really took is logged
// when it took longer than d.
func Eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	start := time.Now()
	limit := max(d, SlowFloor)
	for !cond() {
		if time.Since(start) > limit {
			tb.Fatalf("after %s: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(start); took > d {
		tb.Logf("%s took %s (expected within %s; the machine is slow)", what, took.Round(time.Millisecond), d)
	}
}

// Recv returns the next value from ch. It fails the test if none comes
// within SlowFloor: a receive in a test never blocks forever.
func Recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	t := time.NewTimer(SlowFloor)
	defer t.Stop()
	select {
	case v := <-ch:
		return v
	case <-t.C:
		tb.Fatalf("%s: nothing within %v", what, SlowFloor)
	}
	var zero T
	return zero
}

// Context is a test's context: it ends when the test does, or after two
// minutes, so that a call that hangs fails the test instead of the binary.
func Context(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// Log sends log lines to tb.Log until the test's cleanups reach it, and
// drops them after (a goroutine may log late, and t.Log then panics). Make
// it before anything that logs through it, so that its cleanup runs after
// theirs.
type Log struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

// NewLog returns a Log for tb.
func NewLog(tb testing.TB) *Log {
	l := &Log{tb: tb}
	tb.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// Logger is a debug-level slog.Logger writing to the Log; name, when not
// empty, goes on every line as test_logger.
func (l *Log) Logger(name string) *slog.Logger {
	lg := slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if name != "" {
		lg = lg.With(slog.String("test_logger", name))
	}
	return lg
}

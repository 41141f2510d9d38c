package completion_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/completion"
	"github.com/batonhq/baton/limits"
)

func TestListenerAdmitsWaiter(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator()
		if err := c.SetConcurrencyLimit(ctx, limits.Action("core.http"), 1); err != nil {
			t.Fatal(err)
		}
		daemon := e.coordinator()
		var seen counts
		l := e.listen(daemon, completion.Config{Block: 50 * time.Millisecond, OnEvent: seen.add})

		if _, err := c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			_, err := c.EnqueueAndWait(ctx, "core.http", "e2")
			got <- err
		}()
		eventually(t, 5*time.Second, "e2 queued", func() bool { return e.stats(c, "core.http").QueueLength == 1 })
		e.publish("core.http", "e1", "succeeded")
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("e2 not admitted after e1's completion event")
		}
		// A duplicate (redelivered) event changes nothing.
		e.publish("core.http", "e1", "succeeded")
		// An invalid event (written by hand) is dropped and acknowledged.
		if err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.stream(),
			Values: []any{"action", "bad", "execution", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "events handled", func() bool {
			return seen.get(completion.Released) == 1 && seen.get(completion.NotHeld) == 1 &&
				seen.get(completion.Invalid) == 1
		})
		// The consumer is named after the daemon's Coordinator.
		if cs := e.consumers(completion.DefaultGroup); !slices.Equal(cs, []string{daemon.Owner()}) {
			t.Fatalf("consumers %v, want [%s]", cs, daemon.Owner())
		}
		l.Stop()
		l.Stop()
		if n := e.pending(completion.DefaultGroup); n != 0 {
			t.Fatalf("%d entries pending after stop", n)
		}
		// A clean stop with nothing pending forgets the consumer.
		if cs := e.consumers(completion.DefaultGroup); len(cs) != 0 {
			t.Fatalf("consumers after stop: %v", cs)
		}
		if seen.get(completion.Failed) != 0 {
			t.Fatalf("outcomes: %v", &seen)
		}
		st := e.stats(c, "core.http")
		if st.TotalCompleted != 1 || st.ActiveCount != 1 || st.QueueLength != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestListenerClaimsFromDeadConsumer(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator()
		if _, err := c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
			t.Fatal(err)
		}
		if err := e.rdb.XGroupCreateMkStream(ctx, e.stream(), "g", "0").Err(); err != nil {
			t.Fatal(err)
		}
		e.publish("core.http", "e1", "failed")
		// A consumer reads the event and dies before applying it.
		res, err := e.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead",
			Streams: []string{e.stream(), ">"}, Count: 10, Block: -1}).Result()
		if err != nil || len(res) != 1 || len(res[0].Messages) != 1 {
			t.Fatalf("dead consumer read: %v %v", res, err)
		}
		var seen counts
		e.listen(e.coordinator(), completion.Config{Group: "g", Block: 20 * time.Millisecond,
			ClaimIdle: 100 * time.Millisecond, ClaimInterval: 20 * time.Millisecond, OnEvent: seen.add})
		eventually(t, 10*time.Second, "claimed and released", func() bool {
			e.advance(50 * time.Millisecond)
			return seen.get(completion.Released) == 1
		})
		eventually(t, 5*time.Second, "acknowledged", func() bool { return e.pending("g") == 0 })
		if st := e.stats(c, "core.http"); st.TotalCompleted != 1 || st.ActiveCount != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestListenersShareTheStream(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator()
		const n = 40
		for i := range n {
			if _, err := c.EnqueueAndWait(ctx, "core.batch", fmt.Sprintf("e%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		var seen counts
		cfg := completion.Config{Block: 20 * time.Millisecond, Batch: 3, OnEvent: seen.add}
		e.listen(e.coordinator(), cfg)
		e.listen(e.coordinator(), cfg)
		for i := range n {
			e.publish("core.batch", fmt.Sprintf("e%d", i), "ok")
		}
		eventually(t, 10*time.Second, "all released", func() bool { return seen.get(completion.Released) == n })
		if seen.get(completion.NotHeld) != 0 {
			t.Fatalf("%d events applied twice", seen.get(completion.NotHeld))
		}
		if st := e.stats(c, "core.batch"); st.TotalCompleted != n || st.ActiveCount != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

// flaky is a Coordinator whose first fail calls of NotifyCompletion fail as
// an unreachable Redis would.
type flaky struct {
	*coordinator.Coordinator
	fail  int64
	calls atomic.Int64
}

func (f *flaky) NotifyCompletion(ctx context.Context, action, executionID string) (bool, error) {
	if f.calls.Add(1) <= f.fail {
		return false, errors.New("flaky: connection refused")
	}
	return f.Coordinator.NotifyCompletion(ctx, action, executionID)
}

func TestListenerRetriesFailedRelease(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator()
		if _, err := c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
			t.Fatal(err)
		}
		var seen counts
		e.listen(&flaky{Coordinator: e.coordinator(), fail: 2}, completion.Config{Consumer: "custom",
			Block: 20 * time.Millisecond, ClaimIdle: 100 * time.Millisecond, ClaimInterval: 20 * time.Millisecond,
			OnEvent: seen.add})
		e.publish("core.http", "e1", "succeeded")
		eventually(t, 10*time.Second, "first attempt failed", func() bool { return seen.get(completion.Failed) == 1 })
		if e.mr != nil {
			// The Redis clock stands still: the event waits, unacknowledged,
			// in the pending list of the consumer Config named.
			p, err := e.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: e.stream(),
				Group: completion.DefaultGroup, Start: "-", End: "+", Count: 10}).Result()
			if err != nil || len(p) != 1 || p[0].Consumer != "custom" {
				t.Fatalf("pending: %+v %v", p, err)
			}
			if st := e.stats(c, "core.http"); st.TotalCompleted != 0 || st.ActiveCount != 1 {
				t.Fatalf("stats after a failed release: %+v", st)
			}
		}
		eventually(t, 10*time.Second, "retried until released", func() bool {
			e.advance(50 * time.Millisecond)
			return seen.get(completion.Released) == 1
		})
		eventually(t, 5*time.Second, "acknowledged", func() bool { return e.pending(completion.DefaultGroup) == 0 })
		if seen.get(completion.Failed) != 2 || seen.get(completion.NotHeld) != 0 {
			t.Fatalf("outcomes: %v", &seen)
		}
		if st := e.stats(c, "core.http"); st.TotalCompleted != 1 || st.ActiveCount != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestListenerRecreatesDeletedStream(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator()
		for _, id := range []string{"e1", "e2"} {
			if _, err := c.EnqueueAndWait(ctx, "core.http", id); err != nil {
				t.Fatal(err)
			}
		}
		var seen counts
		e.listen(e.coordinator(), completion.Config{Block: 20 * time.Millisecond, OnEvent: seen.add})
		e.publish("core.http", "e1", "succeeded")
		eventually(t, 10*time.Second, "e1 released", func() bool { return seen.get(completion.Released) == 1 })
		// Redis loses the stream and its group (a restart without
		// persistence); a worker publishes again, which creates a bare stream.
		if err := e.rdb.Del(ctx, e.stream()).Err(); err != nil {
			t.Fatal(err)
		}
		e.publish("core.http", "e2", "succeeded")
		eventually(t, 15*time.Second, "e2 released through a recreated group", func() bool {
			return seen.get(completion.Released) == 2
		})
		if st := e.stats(c, "core.http"); st.TotalCompleted != 2 || st.ActiveCount != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestListenerLifecycle(t *testing.T) {
	e := newMiniEnv(t)
	c := e.coordinator()
	l, err := completion.New(e.rdb, c, e.config(completion.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	l.Stop() // before Start: fine
	l.Stop()
	if err := l.Start(ctxT(t)); err == nil || !strings.Contains(err.Error(), "after Stop") {
		t.Fatalf("Start after Stop: %v", err)
	}

	// A client whose connections fail while down is set, as when Redis is
	// unreachable.
	var down atomic.Bool
	rdb := redis.NewClient(&redis.Options{Addr: e.addr, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, errors.New("test: redis unreachable")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}})
	t.Cleanup(func() { rdb.Close() })
	l2, err := completion.New(rdb, c, e.config(completion.Config{Block: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l2.Stream(), coordinator.CompletedStream(e.prefix); got != want {
		t.Fatalf("Stream() = %q, want %q", got, want)
	}
	// Redis unreachable: Start fails and may be retried (the daemon does).
	down.Store(true)
	if err := l2.Start(ctxT(t)); err == nil || !strings.Contains(err.Error(), "creating consumer group") {
		t.Fatalf("Start with Redis down: %v", err)
	}
	down.Store(false)
	if err := l2.Start(ctxT(t)); err != nil {
		t.Fatalf("Start once Redis is back: %v", err)
	}
	if err := l2.Start(ctxT(t)); err == nil || !strings.Contains(err.Error(), "started twice") {
		t.Fatalf("second Start: %v", err)
	}
	var stops sync.WaitGroup
	for range 3 {
		stops.Go(l2.Stop)
	}
	done := make(chan struct{})
	go func() { stops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("concurrent Stops did not return")
	}
	l2.Stop()
}

func TestNewRejectsBadInput(t *testing.T) {
	e := newMiniEnv(t)
	c := e.coordinator()
	if _, err := completion.New(nil, c, completion.Config{}); err == nil || !strings.Contains(err.Error(), "nil Redis client") {
		t.Errorf("nil client: %v", err)
	}
	if _, err := completion.New(e.rdb, nil, completion.Config{}); err == nil || !strings.Contains(err.Error(), "nil Coordinator") {
		t.Errorf("nil coordinator: %v", err)
	}
	if _, err := completion.New(e.rdb, c, completion.Config{Batch: -1}); !errors.Is(err, completion.ErrInvalidConfig) {
		t.Errorf("bad batch: %v", err)
	}
	if e.mr.Exists(e.stream()) {
		t.Fatal("a rejected New created the stream")
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg := completion.Config{}.WithDefaults()
	if cfg.Prefix != coordinator.DefaultPrefix || cfg.Group != completion.DefaultGroup || cfg.Consumer != "" ||
		cfg.Batch != completion.DefaultBatch || cfg.Block != completion.DefaultBlock ||
		cfg.ClaimIdle != completion.DefaultClaimIdle || cfg.ClaimInterval != completion.DefaultClaimIdle/2 ||
		cfg.Logger == nil || cfg.OnEvent != nil {
		t.Fatalf("defaults: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	// ClaimInterval follows a ClaimIdle the caller set; set fields stay.
	set := completion.Config{Prefix: "p", Group: "g", Consumer: "c", Batch: 7, Block: time.Millisecond,
		ClaimIdle: time.Minute, ClaimInterval: time.Second}
	if got := (completion.Config{ClaimIdle: time.Minute}).WithDefaults().ClaimInterval; got != 30*time.Second {
		t.Fatalf("ClaimInterval = %v, want half of ClaimIdle", got)
	}
	if got := set.WithDefaults(); got.Prefix != "p" || got.Group != "g" || got.Consumer != "c" || got.Batch != 7 ||
		got.Block != time.Millisecond || got.ClaimIdle != time.Minute || got.ClaimInterval != time.Second {
		t.Fatalf("set fields changed: %+v", got)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	cases := []struct {
		field string
		cfg   completion.Config
	}{
		{"Prefix", completion.Config{Prefix: "ba{ton"}},
		{"Group", completion.Config{Group: " "}},
		{"Consumer", completion.Config{Consumer: "\t"}},
		{"Batch", completion.Config{Batch: -1}},
		{"Block", completion.Config{Block: time.Microsecond}},
		{"ClaimIdle", completion.Config{ClaimIdle: time.Millisecond}},
		{"ClaimInterval", completion.Config{ClaimInterval: -time.Second}},
	}
	for _, tc := range cases {
		err := tc.cfg.WithDefaults().Validate()
		if !errors.Is(err, completion.ErrInvalidConfig) || !strings.Contains(err.Error(), "Config."+tc.field+" = ") {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
}

func TestOutcomeNames(t *testing.T) {
	want := map[completion.Outcome]string{completion.Released: "released", completion.NotHeld: "not_held",
		completion.Invalid: "invalid", completion.Failed: "failed", completion.Outcome(0): "Outcome(0)"}
	for o, s := range want {
		if o.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(o), o.String(), s)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", slog.Any("outcome", o))
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["outcome"] != s {
			t.Errorf("%s logged as %s (%v)", s, buf.String(), err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the listener's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestListenerLogsThroughTheInjectedLogger(t *testing.T) {
	e := newMiniEnv(t)
	var buf syncBuffer
	var seen counts
	e.listen(e.coordinator(), completion.Config{Block: 10 * time.Millisecond, OnEvent: seen.add,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil)).With(slog.String("daemon", "d1"))})
	if err := e.rdb.XAdd(ctxT(t), &redis.XAddArgs{Stream: e.stream(),
		Values: []any{"action", "core.http", "execution", ""}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "invalid event handled", func() bool { return seen.get(completion.Invalid) == 1 })
	var rec map[string]any
	for line := range strings.Lines(buf.String()) {
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if rec["msg"] == "completion: dropping invalid event" {
			break
		}
		rec = nil
	}
	t.Logf("record: %v", rec)
	if rec == nil || rec["level"] != "WARN" || rec["outcome"] != "invalid" || rec["daemon"] != "d1" ||
		rec["component"] != "completion_listener" || rec["action"] != "core.http" || rec["error"] == nil {
		t.Fatalf("no warning with the event's attributes in:\n%s", buf.String())
	}
}

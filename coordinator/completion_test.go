package coordinator_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

func TestPublishCompletionRejectsBadInput(t *testing.T) {
	e := newMiniEnv(t)
	ctx := ctxT(t)
	cases := []struct{ name, prefix, action, id, status string }{
		{"bad action", "baton", "nodot", "e1", "succeeded"},
		{"empty action", "baton", "", "e1", "succeeded"},
		{"empty id", "baton", "core.http", "", "succeeded"},
		{"control char id", "baton", "core.http", "e\n1", "succeeded"},
		{"empty status", "baton", "core.http", "e1", ""},
		{"long status", "baton", "core.http", "e1", strings.Repeat("x", 65)},
		{"control char status", "baton", "core.http", "e1", "ok\x00"},
		{"bad prefix", "ba{ton", "core.http", "e1", "ok"},
	}
	for _, tc := range cases {
		err := coordinator.PublishCompletionWithPrefix(ctx, e.rdb, tc.prefix, tc.action, tc.id, tc.status)
		if !errors.Is(err, coordinator.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	if keys := e.keys(); len(keys) != 0 {
		t.Fatalf("invalid publishes wrote %v", keys)
	}
	if err := coordinator.PublishCompletion(ctx, nil, "core.http", "e1", "ok"); !errors.Is(err, coordinator.ErrInvalidArgument) {
		t.Fatalf("nil client: %v", err)
	}
	if err := coordinator.PublishCompletion(ctx, e.rdb, "core.http", "e1", "succeeded"); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.rdb.XRange(ctx, coordinator.CompletedStream(""), "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream: %v %v", msgs, err)
	}
	v := msgs[0].Values
	if v["action"] != "core.http" || v["execution"] != "e1" || v["status"] != "succeeded" {
		t.Fatalf("fields: %v", v)
	}
}

// outcomes counts a listener's OnEvent outcomes.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[s]++
}

func (o *outcomes) get(s string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[s]
}

func listener(t *testing.T, c *coordinator.Coordinator, opts coordinator.CompletionListenerOptions) *coordinator.CompletionListener {
	t.Helper()
	l, err := coordinator.NewCompletionListener(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	return l
}

func pendingCount(t *testing.T, e *env, group string) int64 {
	t.Helper()
	p, err := e.rdb.XPending(ctxT(t), coordinator.CompletedStream(e.prefix), group).Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

func TestCompletionListenerAdmitsWaiter(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		if err := c.SetConcurrencyLimit(ctx, limits.Action("core.http"), 1); err != nil {
			t.Fatal(err)
		}
		daemon := e.coordinator(e.opts())
		var seen outcomes
		l := listener(t, daemon, coordinator.CompletionListenerOptions{Block: 50 * time.Millisecond, OnEvent: seen.add})

		if _, err := c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			_, err := c.EnqueueAndWait(ctx, "core.http", "e2")
			got <- err
		}()
		eventually(t, 5*time.Second, "e2 queued", func() bool { return e.stats(c, "core.http").QueueLength == 1 })
		if err := coordinator.PublishCompletionWithPrefix(ctx, e.rdb, e.prefix, "core.http", "e1", "succeeded"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("e2 not admitted after e1's completion event")
		}
		// A duplicate (redelivered) event changes nothing.
		if err := coordinator.PublishCompletionWithPrefix(ctx, e.rdb, e.prefix, "core.http", "e1", "succeeded"); err != nil {
			t.Fatal(err)
		}
		// An invalid event (written by hand) is dropped and acknowledged.
		if err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: coordinator.CompletedStream(e.prefix),
			Values: []any{"action", "bad", "execution", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "events handled", func() bool {
			return seen.get("released") == 1 && seen.get("not_held") == 1 && seen.get("invalid") == 1
		})
		l.Stop()
		l.Stop()
		if n := pendingCount(t, e, "baton-coordinator"); n != 0 {
			t.Fatalf("%d entries pending after stop", n)
		}
		st := e.stats(c, "core.http")
		if st.TotalCompleted != 1 || st.ActiveCount != 1 || st.QueueLength != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestCompletionListenerClaimsFromDeadConsumer(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		if _, err := c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
			t.Fatal(err)
		}
		stream := coordinator.CompletedStream(e.prefix)
		if err := e.rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err(); err != nil {
			t.Fatal(err)
		}
		if err := coordinator.PublishCompletionWithPrefix(ctx, e.rdb, e.prefix, "core.http", "e1", "failed"); err != nil {
			t.Fatal(err)
		}
		// A consumer reads the event and dies before applying it.
		res, err := e.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead",
			Streams: []string{stream, ">"}, Count: 10, Block: -1}).Result()
		if err != nil || len(res) != 1 || len(res[0].Messages) != 1 {
			t.Fatalf("dead consumer read: %v %v", res, err)
		}
		var seen outcomes
		listener(t, e.coordinator(e.opts()), coordinator.CompletionListenerOptions{Group: "g",
			Block: 20 * time.Millisecond, ClaimIdle: 100 * time.Millisecond, ClaimInterval: 20 * time.Millisecond,
			OnEvent: seen.add})
		eventually(t, 10*time.Second, "claimed and released", func() bool {
			e.advance(50 * time.Millisecond)
			return seen.get("released") == 1
		})
		eventually(t, 5*time.Second, "acknowledged", func() bool { return pendingCount(t, e, "g") == 0 })
		if st := e.stats(c, "core.http"); st.TotalCompleted != 1 || st.ActiveCount != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestCompletionListenersShareTheStream(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const n = 40
		for i := range n {
			if _, err := c.EnqueueAndWait(ctx, "core.batch", "e"+string(rune('A'+i))); err != nil {
				t.Fatal(err)
			}
		}
		var seen outcomes
		opts := coordinator.CompletionListenerOptions{Block: 20 * time.Millisecond, Batch: 3, OnEvent: seen.add}
		listener(t, e.coordinator(e.opts()), opts)
		listener(t, e.coordinator(e.opts()), opts)
		for i := range n {
			if err := coordinator.PublishCompletionWithPrefix(ctx, e.rdb, e.prefix, "core.batch", "e"+string(rune('A'+i)), "ok"); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 10*time.Second, "all released", func() bool { return seen.get("released") == n })
		if seen.get("not_held") != 0 {
			t.Fatalf("%d events applied twice", seen.get("not_held"))
		}
		if st := e.stats(c, "core.batch"); st.TotalCompleted != n || st.ActiveCount != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestCompletionListenerOptionsAndLifecycle(t *testing.T) {
	e := newMiniEnv(t)
	c := e.coordinator(e.opts())
	if _, err := coordinator.NewCompletionListener(nil, coordinator.CompletionListenerOptions{}); !errors.Is(err, coordinator.ErrInvalidArgument) {
		t.Fatalf("nil coordinator: %v", err)
	}
	if _, err := coordinator.NewCompletionListener(c, coordinator.CompletionListenerOptions{Batch: -1}); !errors.Is(err, coordinator.ErrInvalidArgument) {
		t.Fatalf("bad batch: %v", err)
	}
	l, err := coordinator.NewCompletionListener(c, coordinator.CompletionListenerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Stop() // before Start: fine
	l2, err := coordinator.NewCompletionListener(c, coordinator.CompletionListenerOptions{Block: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := l2.Start(ctxT(t)); err == nil {
		t.Fatal("second Start succeeded")
	}
	l2.Stop()
	l2.Stop()
}

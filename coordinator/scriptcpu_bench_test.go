package coordinator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// BenchmarkScriptCPU is the Redis CPU (INFO cpu, user + system, net of
// idle) of one enqueue.lua call, sent as FCALLs in pipelines of 200 so that
// system calls weigh little and the figure is mostly the Lua work: "fast"
// admits (no limit), "queued" appends to a paused queue. No rate and no
// quota: this is what every admission pays, with or without those features.
//
//	go test -run '^$' -bench ScriptCPU -benchtime 40000x ./coordinator/
//
// "handoff" is the queued admission's whole Redis work: per iteration one
// enqueue.lua that queues behind a full action (limit 4) and one
// release.lua that frees the oldest slot and grants it to the head.
// "handoff8" does the same on 8 actions in turn, as the peer harness's
// workload does: the action's state then differs from one call to the next.
func BenchmarkScriptCPU(b *testing.B) {
	b.Run("handoff", func(b *testing.B) { benchHandoffCPU(b, 1) })
	b.Run("handoff8", func(b *testing.B) { benchHandoffCPU(b, 8) })
	for _, mode := range []string{"fast", "queued"} {
		b.Run(mode, func(b *testing.B) {
			e := newRealEnv(b)
			ctx := context.Background()
			a := "bench.cpu" + mode
			c := e.coordinator(coordinator.Options{Prefix: e.prefix, SweepInterval: -1})
			l, err := c.EnqueueAndWait(ctx, a, "setup") // the action exists, the library is loaded
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
			if mode == "queued" {
				if err := c.SetConcurrencyLimit(ctx, limits.Action(a), 0); err != nil {
					b.Fatal(err)
				}
			}
			fn := scripts.ByName("enqueue").Function()
			k := keys.New(e.prefix).Action(a)
			meterPipelined(b, e.rdb, 200, func(p redis.Pipeliner, j int) {
				p.FCall(ctx, fn, k.List, k.Base, fmt.Sprintf("x-%d", j), c.Owner(), -1, 30000, 1000, -1, 0, "", "", "")
			}, nil)
		})
	}
}

// benchHandoffCPU runs the handoff on n actions in turn (limit 4 each).
func benchHandoffCPU(b *testing.B, n int) {
	e := newRealEnv(b)
	ctx := context.Background()
	c := e.coordinator(coordinator.Options{Prefix: e.prefix, SweepInterval: -1})
	en, rel := scripts.ByName("enqueue").Function(), scripts.ByName("release").Function()
	ks := make([]keys.Action, n)
	held := make([][]string, n) // per action, the holders oldest first
	enqueue := func(p redis.Cmdable, a int, id string) *redis.Cmd {
		return p.FCall(ctx, en, ks[a].List, ks[a].Base, id, c.Owner(), -1, 30000, 30000, -1, 0, "", "", "")
	}
	for a := range ks {
		name := fmt.Sprintf("bench.cpuhandoff%d", a)
		if err := c.SetConcurrencyLimit(ctx, limits.Action(name), 4); err != nil {
			b.Fatal(err)
		}
		l, err := c.EnqueueAndWait(ctx, name, "setup") // the action has its limit, the library is loaded
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
		ks[a] = keys.New(e.prefix).Action(name)
		// Four holders of no Lease (so nothing renews them): the action is full.
		for i := range 4 {
			id := fmt.Sprintf("h-%d", i)
			if st, err := enqueue(e.rdb, a, id).Slice(); err != nil || st[0] != "admitted" {
				b.Fatalf("setup: enqueue %s: %v %v", id, st, err)
			}
			held[a] = append(held[a], id)
		}
	}
	meterPipelined(b, e.rdb, 100, func(p redis.Pipeliner, j int) {
		a, id := j%n, fmt.Sprintf("x-%d", j)
		enqueue(p, a, id)                                                                    // queued: the action is full
		p.FCall(ctx, rel, ks[a].List, ks[a].Base, held[a][0], "0", 30000, -1, 0, "", "", "") // grants id
		held[a] = append(held[a][1:], id)
	}, func(cmds []redis.Cmder, first int) {
		for j := 0; j < len(cmds); j += 2 { // each pair queued one and granted it a slot
			q, _ := cmds[j].(*redis.Cmd).Slice()
			r, _ := cmds[j+1].(*redis.Cmd).Slice()
			if len(q) == 0 || q[0] != "queued" || len(r) < 2 || r[0] != int64(1) || r[1] != int64(1) {
				b.Fatalf("handoff %d: enqueue replied %v, release %v; want queued, then held 1 granted 1", first+j/2, q, r)
			}
		}
	})
	for _, k := range ks {
		if got, err := e.rdb.ZCard(ctx, k.Running()).Result(); err != nil || got != 4 {
			b.Fatalf("after the run %d hold slots of %s (%v), want 4", got, k.Base, err)
		}
	}
}

// meterPipelined reports the Redis CPU of b.N iterations, sent batch at a
// time in one pipeline each: add queues iteration j's commands, and check
// (if not nil) looks at each pipeline's replies, first being its first
// iteration.
func meterPipelined(b *testing.B, rdb redis.UniversalClient, batch int, add func(p redis.Pipeliner, j int), check func(cmds []redis.Cmder, first int)) {
	ctx := context.Background()
	meter := newCPUMeter(b, rdb)
	b.ResetTimer()
	meter.start()
	for i := 0; i < b.N; i += batch {
		cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+batch, b.N); j++ {
				add(p, j)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err, cmds[0])
		}
		if check != nil {
			check(cmds, i)
		}
	}
	b.StopTimer()
	meter.report(b.N)
}

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
func BenchmarkScriptCPU(b *testing.B) {
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
			meter := newCPUMeter(b, e.rdb)
			b.ResetTimer()
			meter.start()
			const batch = 200
			for i := 0; i < b.N; i += batch {
				cmds, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
					for j := i; j < min(i+batch, b.N); j++ {
						p.FCall(ctx, fn, k.List, k.Base, fmt.Sprintf("x-%d", j), c.Owner(), -1, 30000, 1000, -1, 0, "", "", "")
					}
					return nil
				})
				if err != nil {
					b.Fatal(err, cmds[0])
				}
			}
			b.StopTimer()
			meter.report(b.N)
		})
	}
}

package coordinator_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
)

// A worker reports a finished execution on the completion stream; the
// daemon's CompletionListener frees its slot.
func ExamplePublishCompletion() {
	mr, err := miniredis.Run() // any Redis 7; miniredis keeps the example self-contained
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	// The daemon side: a Coordinator and its completion listener.
	daemon, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1})
	if err != nil {
		panic(err)
	}
	defer daemon.Close()
	listener, err := coordinator.NewCompletionListener(daemon, coordinator.CompletionListenerOptions{})
	if err != nil {
		panic(err)
	}
	if err := listener.Start(ctx); err != nil {
		panic(err)
	}
	defer listener.Stop()

	// The executor admits the execution; the worker that ran it reports it done.
	if _, err := daemon.EnqueueAndWait(ctx, "core.http", "exec-1"); err != nil {
		panic(err)
	}
	if err := coordinator.PublishCompletion(ctx, rdb, "core.http", "exec-1", "succeeded"); err != nil {
		panic(err)
	}

	for range 500 { // the listener applies it within a moment
		st, err := daemon.QueueStats(ctx, "core.http")
		if err == nil && st.TotalCompleted == 1 {
			fmt.Println("completed:", st.TotalCompleted, "running:", st.ActiveCount)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output: completed: 1 running: 0
}

package completion_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/completion"
)

// A worker reports a finished execution on the completion stream; the
// daemon's Listener frees its slot.
func ExampleListener() {
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
	outcomes := make(chan completion.Outcome, 1)
	listener, err := completion.New(rdb, daemon, completion.Config{
		OnEvent: func(o completion.Outcome) { outcomes <- o },
	})
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

	select {
	case o := <-outcomes:
		fmt.Println("outcome:", o)
	case <-time.After(10 * time.Second):
		fmt.Println("no event handled")
		return
	}
	st, err := daemon.QueueStats(ctx, "core.http")
	if err != nil {
		panic(err)
	}
	fmt.Println("completed:", st.TotalCompleted, "running:", st.ActiveCount)
	// Output:
	// outcome: released
	// completed: 1 running: 0
}

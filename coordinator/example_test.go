package coordinator_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// An executor admits an execution, runs it, and releases its slot.
func Example() {
	mr, err := miniredis.Run() // any Redis 7; miniredis keeps the example self-contained
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	c, err := coordinator.New(rdb, coordinator.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	if err := c.SetConcurrencyLimit(ctx, limits.Pack("core"), 2); err != nil {
		log.Fatal(err)
	}
	lease, err := c.EnqueueAndWait(ctx, "core.http", "exec-42") // blocks until admitted
	if err != nil {
		log.Fatal(err)
	}
	st, _ := c.QueueStats(ctx, "core.http")
	fmt.Printf("running %d of %d (limit from %s), token %d\n", st.ActiveCount, st.MaxConcurrent, st.LimitSource, lease.Token())

	// ... run the execution; stop early if <-lease.Lost() fires ...

	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	st, _ = c.QueueStats(ctx, "core.http")
	fmt.Printf("running %d, completed %d\n", st.ActiveCount, st.TotalCompleted)
	// Output:
	// running 1 of 2 (limit from pack:core), token 1
	// running 0, completed 1
}

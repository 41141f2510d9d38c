package coordinator_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
)

// A worker reports a finished execution on the completion stream; the
// daemon's completion listener reads it and frees the execution's slot.
func ExamplePublishCompletion() {
	mr, err := miniredis.Run() // any Redis 7; miniredis keeps the example self-contained
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	if err := coordinator.PublishCompletion(ctx, rdb, "core.http", "exec-1", "succeeded"); err != nil {
		panic(err)
	}

	// What the listener reads: one stream entry per completion.
	entries, err := rdb.XRange(ctx, coordinator.CompletedStream(""), "-", "+").Result()
	if err != nil {
		panic(err)
	}
	v := entries[0].Values
	fmt.Println(coordinator.CompletedStream(""), v["action"], v["execution"], v["status"])
	// Output: baton:events:completed core.http exec-1 succeeded
}

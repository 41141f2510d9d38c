package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

func main() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DB: 14})
	keys, _ := rdb.Keys(ctx, "baton:*").Result()
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
	c, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1})
	if err != nil {
		panic(err)
	}
	must(c.SetRateLimit(ctx, limits.Pack("slack"), limits.Rate{Limit: 2, Per: 10 * time.Second, Burst: 2}))
	must(c.SetQuota(ctx, limits.Action("slack.post"), limits.Quota{Limit: 5, Window: limits.Day}))
	for i := 41; i <= 42; i++ {
		if _, err := c.EnqueueAndWait(ctx, "slack.post", fmt.Sprint("exec-", i)); err != nil {
			panic(err)
		}
	}
	for i := 43; i <= 44; i++ {
		go c.EnqueueAndWait(ctx, "slack.post", fmt.Sprint("exec-", i))
	}
	time.Sleep(300 * time.Millisecond)
	st, _ := c.QueueStats(ctx, "slack.post")
	fmt.Printf("%+v\n", st)
	time.Sleep(time.Hour)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/redistest"
)

// TestSentinelFailover: the failover client writes to the master; after
// the master is SIGKILLed a replica is promoted, the client reconnects to
// it by itself and finds the write (synced before the kill). The killed
// server comes back as a replica.
func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb := g.Client()
	defer rdb.Close()

	before, err := g.MasterAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := redistest.Prefix(t) + ":v"
	if err := rdb.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Do(ctx, "WAIT", 2, 5000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT 2: %d, %v", n, err)
	}

	start := time.Now()
	after, err := g.KillMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s; %s promoted after %s", before, after, time.Since(start).Round(time.Millisecond))
	if after == before || after == "" {
		t.Fatalf("master after the failover: %q", after)
	}
	var got string
	for i := 0; ; i++ {
		got, err = rdb.Get(ctx, key).Result()
		if err == nil || i == 100 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got != "before" {
		t.Fatalf("GET through the failover client after the failover: %q, %v", got, err)
	}
	if err := rdb.Set(ctx, key, "after", 0).Err(); err != nil {
		t.Fatalf("SET after the failover: %v", err)
	}
	t.Logf("the failover client answered %s after the kill", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	if err := g.Revive(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s is a replica again after %s", before, time.Since(start).Round(time.Millisecond))
	if got, err := g.MasterAddr(ctx); err != nil || got != after {
		t.Fatalf("master after the revival: %q, %v; want %s", got, err, after)
	}
}

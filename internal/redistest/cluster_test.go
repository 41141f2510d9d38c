package redistest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/batonhq/baton/internal/redistest"
)

func TestMain(m *testing.M) {
	redis.SetLogger(&logging.VoidLogger{}) // dial errors while a node is down on purpose
	os.Exit(redistest.Main(m))
}

// TestClusterForms: the shared cluster has 3 masters with one live replica
// each, and serves plain commands and scripts on keys spread over every
// master through a cluster client, with no MOVED reaching the caller.
func TestClusterForms(t *testing.T) {
	c := redistest.SharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	roles, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	masters, replicaOf := map[string]bool{}, map[string]string{}
	for _, r := range roles {
		if !r.Alive {
			t.Fatalf("node %s is not running", r.Addr)
		}
		if r.Master {
			masters[r.ID] = true
		} else {
			replicaOf[r.ID] = r.MasterID
		}
	}
	if len(masters) != 3 || len(replicaOf) != 3 {
		t.Fatalf("roles: %+v", roles)
	}
	for id, m := range replicaOf {
		if !masters[m] {
			t.Fatalf("replica %s follows %q, not a master", id, m)
		}
	}
	if len(c.Seeds()) != 6 {
		t.Fatalf("seeds: %v", c.Seeds())
	}

	rdb := c.Client()
	defer rdb.Close()
	prefix := redistest.Prefix(t)
	on := map[string]int{}
	for i := range 300 {
		key := fmt.Sprintf("%s:{k%d}:v", prefix, i)
		if err := rdb.Set(ctx, key, i, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		addr, err := c.MasterOf(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		on[addr]++
	}
	if len(on) != 3 {
		t.Fatalf("300 keys landed on %d masters: %v", len(on), on)
	}
	incr := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	for i := range 300 {
		key := fmt.Sprintf("%s:{k%d}:v", prefix, i)
		got, err := rdb.Get(ctx, key).Int()
		if err != nil || got != i {
			t.Fatalf("GET %s: %d, %v", key, got, err)
		}
		if n, err := incr.Run(ctx, rdb, []string{key}, 1).Int(); err != nil || n != i+1 {
			t.Fatalf("script on %s: %d, %v", key, n, err)
		}
	}
	t.Logf("300 keys over the masters: %v", on)
}

// TestClusterKillMasterAndRevive: SIGKILL a master; its replica takes over
// its slots and the data written before; the killed node comes back as a
// replica, leaving the shared cluster whole for the next test.
func TestClusterKillMasterAndRevive(t *testing.T) {
	c := redistest.SharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb := c.Client()
	defer rdb.Close()
	key := redistest.Prefix(t) + ":{x}:v"
	if err := rdb.Set(ctx, key, "before", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	master, err := c.MasterOf(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the replica has the key before the kill.
	m := redis.NewClient(&redis.Options{Addr: master})
	n, err := m.Do(ctx, "WAIT", 1, 5000).Int()
	m.Close()
	if err != nil || n != 1 {
		t.Fatalf("WAIT 1 on %s: %d, %v", master, n, err)
	}

	start := time.Now()
	promoted, err := c.KillMaster(ctx, master)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s; %s promoted after %s", master, promoted, time.Since(start).Round(time.Millisecond))
	if got, err := c.MasterOf(ctx, key); err != nil || got != promoted {
		t.Fatalf("the key's master after the failover: %s, %v; want %s", got, err, promoted)
	}
	// The client finds the new master by itself within its reload interval.
	var got string
	for i := 0; ; i++ {
		got, err = rdb.Get(ctx, key).Result()
		if err == nil || i == 100 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got != "before" {
		t.Fatalf("GET after the failover: %q, %v", got, err)
	}
	roles, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		if r.Addr == master && r.Alive {
			t.Fatalf("killed node still alive: %+v", r)
		}
	}

	start = time.Now()
	if err := c.Revive(ctx, master); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s rejoined as a replica after %s", master, time.Since(start).Round(time.Millisecond))
	roles, err = c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		if r.Addr == master && (r.Master || !r.Alive) {
			t.Fatalf("revived node: %+v", r)
		}
	}
}

package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/internal/redistest"
)

// startCluster starts a loopback cluster of 3 masters and 3 replicas for
// --start-cluster; stop kills it and removes its files.
func startCluster() (seeds []string, stop func(), err error) {
	if !redistest.Available() {
		return nil, nil, fmt.Errorf("--start-cluster: redis-server is not on PATH")
	}
	dir, err := os.MkdirTemp("", "baton-bench-cluster-")
	if err != nil {
		return nil, nil, err
	}
	c, err := redistest.StartCluster(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("--start-cluster: %w", err)
	}
	return c.Seeds(), func() { c.Stop(); _ = os.RemoveAll(dir) }, nil
}

// startRedis starts one loopback redis-server for --start-redis.
func startRedis() (url string, stop func(), err error) {
	if !redistest.Available() {
		return "", nil, fmt.Errorf("--start-redis: redis-server is not on PATH")
	}
	dir, err := os.MkdirTemp("", "baton-bench-redis-")
	if err != nil {
		return "", nil, err
	}
	s, err := redistest.StartServer(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("--start-redis: %w", err)
	}
	return "redis://" + s.Addr, func() { s.Stop(); _ = os.RemoveAll(dir) }, nil
}

// masterCPU reads INFO cpu (user + sys, µs) of every master.
func masterCPU(ctx context.Context, rdb *redis.ClusterClient) (map[string]int64, error) {
	var mu sync.Mutex
	out := map[string]int64{}
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		us, err := redisstats.ReadCPU(ctx, n)
		mu.Lock()
		out[n.Options().Addr] = us
		mu.Unlock()
		return err
	})
	return out, err
}

// runClusterThroughput is runThroughput on a Redis Cluster: the same load,
// with each master's Redis CPU over the run and how evenly the actions'
// work spread over the masters.
func runClusterThroughput(ctx context.Context, f *Flags, e *env, stderr io.Writer) (*report.Report, error) {
	wl := f.Workload
	r := e.newReport("throughput")
	r.Workload = &wl
	rdb, counter, err := loadgen.ConnectCluster(e.cluster, loadgen.PoolSize(wl.Clients, wl.Actions))
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	defer e.cleanupCluster(rdb)
	copts := f.coordinatorOptions(e.prefix)
	if wl.Processes > 1 {
		copts.SweepInterval = -1
	}
	c, closeC, err := loadgen.NewCoordinator(ctx, rdb, counter, copts)
	if err != nil {
		return nil, err
	}
	defer closeC()
	if err := setLimits(ctx, c, wl.Refs(), wl.Limit); err != nil {
		return nil, err
	}
	actions := map[string]int{}
	k := keys.New(e.prefix)
	for _, ref := range wl.Refs() {
		m, err := rdb.MasterForKey(ctx, k.Action(ref).Queue())
		if err != nil {
			return nil, err
		}
		actions[m.Options().Addr]++
	}

	before, err := masterCPU(ctx, rdb)
	if err != nil {
		return nil, fmt.Errorf("INFO cpu of the masters: %w", err)
	}
	col := loadgen.NewCollector()
	stop := startProgress(stderr, f.Progress, "baton", wl.Planned(), col.Progress)
	var counts redisstats.Counts
	if wl.Processes == 1 {
		snap := counter.Snapshot()
		loadgen.Run(ctx, loadgen.Baton{C: c}, f.loadConfig(0), col.Add)
		counts = counter.Snapshot().Sub(snap)
	} else {
		children, err := startChildren(ctx, f, e, col)
		if err != nil {
			stop()
			return nil, err
		}
		for _, ch := range children {
			if err := ch.Wait(ctx); err != nil {
				r.Notes = append(r.Notes, fmt.Sprintf("child %d: %v", ch.Process, err))
			}
		}
		counts = col.Counts()
	}
	stop()
	after, err := masterCPU(context.WithoutCancel(ctx), rdb)
	if err != nil {
		return nil, fmt.Errorf("INFO cpu of the masters: %w", err)
	}
	s := metrics.Summarize(col.Executions(), wl.Planned(), wl.Limit, 0)
	r.Load = report.NewLoad("baton", s, counts, nil, col.Failures())
	var total int64
	for addr, us := range after {
		b, ok := before[addr]
		if !ok {
			return nil, fmt.Errorf("the masters changed during the run (%s is new): no per-master figures", addr)
		}
		total += us - b
	}
	r.Load.SetRedisCPU(total)
	r.Masters = report.SpreadOf(after, before, actions, r.Load.Admitted)
	r.BusiestOverMean = report.BusiestOverMean(r.Masters)
	r.Notes = append(r.Notes, fmt.Sprintf("Redis Cluster of %d masters; redis_cpu_us_per_admission sums INFO cpu over the masters (replicas not counted)", len(after)),
		"round trips are counted per pipeline the cluster client is given; it splits each into one per master, so on a cluster they are undercounted")
	if f.WaitReplicas > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("WaitReplicas %d: every state-changing call waits for %d replica(s) (WAIT, timeout %v)", f.WaitReplicas, f.WaitReplicas, f.WaitTimeout),
			"with WaitReplicas on a cluster, script calls go through each master's own client, which the command counter does not see: redis_cmds_per_admission and round trips are not measured")
	}
	finishThroughput(r, f)
	r.Failed = broken(r.Load)
	return r, nil
}

// cleanupCluster deletes every key of the run on every master.
func (e *env) cleanupCluster(rdb *redis.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_ = rdb.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		e.cleanup(n)
		return nil
	})
}

// parseSeeds reads --cluster: host:port addresses separated by commas.
func parseSeeds(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if err := loadgen.CheckLoopback("redis://" + a); err != nil {
			return nil, fmt.Errorf("--cluster: %w", err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--cluster %q: want host:port[,host:port...]", s)
	}
	slices.Sort(out)
	return out, nil
}

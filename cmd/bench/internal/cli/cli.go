// Package cli is the bench command: it parses the flags, sets up the Redis
// to measure (a loopback redis-server, or an in-process miniredis), runs the
// chosen mode and prints the report.
package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/cmd/bench/internal/workload"
	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitBroken = 1 // a promise was broken: limit violations, FIFO inversions or lost executions
	ExitError  = 2 // bad flags, or the bench could not run
)

// Flags are the command line. Each field holds the flag of the same name
// (Redis is --redis, IDBytes is --id-bytes); see Parse for their meaning.
type Flags struct {
	// Redis, JSON, Mode and Workload (--actions ... --processes) describe the run;
	// WorkText is --work as given.
	Redis string
	JSON  bool
	// Cluster is --cluster (seed addresses); StartCluster and StartRedis
	// are --start-cluster and --start-redis.
	Cluster      string
	StartCluster bool
	StartRedis   bool
	// KeyPrefix is --key-prefix: the namespace the run's keys go under
	// ("<ns>:bench-<hex>"), so that a Redis user limited to "~<ns>:*" (the
	// ACL line of docs/security.md) can run the bench.
	KeyPrefix string
	// WaitReplicas and WaitTimeout configure every Coordinator.
	WaitReplicas int
	WaitTimeout  time.Duration
	Mode         string
	Workload     workload.Workload
	WorkText     string

	// Calibrate is --calibrate; CalibrateSet says whether it was given.
	Calibrate         bool
	CalibrateSet      bool
	CalibrateDuration time.Duration
	Baseline          string
	// Via is --via (library or http); Daemons is --daemons.
	Via     string
	Daemons int

	// Timeout bounds the run; the others configure every Coordinator.
	Timeout       time.Duration
	LeaseTTL      time.Duration
	AckTimeout    time.Duration
	SweepInterval time.Duration
	Progress      string

	// Memory and sweep modes.
	Queued      int
	IDBytes     int
	IdleActions int
	Due         int
	SweepPasses int

	// Crash mode.
	KillWhen  string
	KillAfter float64

	// Throttle and quota modes: --rate, --burst, --quota and --duration.
	RateText  string
	Burst     int
	QuotaText string
	Duration  time.Duration
}

// Parse reads the command line.
func Parse(args []string, stderr io.Writer) (*Flags, error) {
	f := &Flags{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bench [flags]   (see BENCHMARKS.md)")
		fs.PrintDefaults()
	}
	fs.StringVar(&f.Redis, "redis", "", "Redis to measure, redis://host:port (loopback only); empty: an in-process miniredis (not Redis figures)")
	fs.StringVar(&f.Cluster, "cluster", "", "Redis Cluster to measure: seed addresses host:port,host:port (loopback only); throughput mode")
	fs.BoolVar(&f.StartCluster, "start-cluster", false, "start a loopback Redis Cluster of 3 masters and 3 replicas (redis-server on PATH) and measure it; throughput mode")
	fs.BoolVar(&f.StartRedis, "start-redis", false, "start one loopback redis-server (on PATH) and measure it")
	fs.StringVar(&f.KeyPrefix, "key-prefix", "", "put the run's keys under this namespace (<ns>:bench-<hex>:...), as the ACL user of docs/security.md needs")
	fs.IntVar(&f.WaitReplicas, "wait-replicas", 0, "Coordinator WaitReplicas: state-changing calls wait for this many replicas (WAIT)")
	fs.DurationVar(&f.WaitTimeout, "wait-timeout", coordinator.DefaultWaitTimeout, "Coordinator WaitTimeout")
	fs.BoolVar(&f.JSON, "json", false, "print exactly one JSON object on stdout instead of the table")
	fs.StringVar(&f.Mode, "mode", "throughput", "throughput, memory, sweep, crash, throttle or quota")
	fs.IntVar(&f.Workload.Actions, "actions", 8, "distinct actions")
	fs.IntVar(&f.Workload.Limit, "limit", 4, "concurrency limit per action")
	fs.IntVar(&f.Workload.Executions, "executions", 500, "executions per action")
	fs.IntVar(&f.Workload.Clients, "clients", 64, "concurrent closed-loop submitters, round-robin over the actions")
	fs.StringVar(&f.WorkText, "work", "2ms", "how long an execution holds its slot: a duration (2ms) or exp:<mean>")
	fs.IntVar(&f.Workload.Processes, "processes", 1, "executor OS processes sharing Redis (children re-run this binary)")
	// Registered as false so that the help adds no "(default ...)": unset
	// means on with --redis, off on miniredis (see calibrating).
	fs.BoolVar(&f.Calibrate, "calibrate", false, "measure PING and EVALSHA ops/s first: --calibrate or --calibrate=false; unset, on with --redis and off on miniredis")
	fs.DurationVar(&f.CalibrateDuration, "calibrate-duration", time.Second, "how long each calibration measurement runs")
	fs.StringVar(&f.Baseline, "baseline", "", "also run a baseline limiter side by side: polling (INCR, DECR + sleep 10ms + retry)")
	fs.StringVar(&f.Via, "via", "library", "throughput: library, or http to also run the same workload through the daemon's HTTP admission API (in-process daemons on loopback) and compare")
	fs.IntVar(&f.Daemons, "daemons", 2, "--via http: in-process daemons, called in turn as behind a load balancer")
	fs.DurationVar(&f.Timeout, "timeout", 2*time.Minute, "bound on the whole run; executions not finished by then are lost")
	fs.DurationVar(&f.LeaseTTL, "lease-ttl", 30*time.Second, "Coordinator LeaseTTL")
	fs.DurationVar(&f.AckTimeout, "ack-timeout", 5*time.Second, "Coordinator AckTimeout")
	fs.DurationVar(&f.SweepInterval, "sweep-interval", time.Second, "Coordinator SweepInterval")
	fs.StringVar(&f.Progress, "progress", "auto", "progress bar on stderr: auto (when a terminal), on, off")
	fs.IntVar(&f.Queued, "queued", 0, "memory: waiting executions on one action (default 100000); sweep: waiting executions over all idle actions (default 1000000)")
	fs.IntVar(&f.IDBytes, "id-bytes", 36, "memory, sweep: length of the execution IDs (36: a UUID)")
	fs.IntVar(&f.IdleActions, "idle-actions", 10000, "sweep: actions with waiters and nothing due")
	fs.IntVar(&f.Due, "due", 10, "sweep: actions made due for the second kind of pass")
	fs.IntVar(&f.SweepPasses, "sweep-passes", 5, "sweep: passes measured of each kind")
	fs.StringVar(&f.KillWhen, "kill-when", "holding", "crash: kill the victim while it holds slots (holding) or while it only waits (waiting)")
	fs.Float64Var(&f.KillAfter, "kill-after", 0.25, "crash: kill once this fraction of the executions finished")
	fs.StringVar(&f.RateText, "rate", "200/1s", "throttle: the rate of the throttled phase, LIMIT/PER (per action, set on their pack)")
	fs.IntVar(&f.Burst, "burst", 10, "throttle: the rate's burst")
	fs.StringVar(&f.QuotaText, "quota", "100/minute", "quota: the quota, LIMIT/WINDOW (per action, set on their pack)")
	fs.DurationVar(&f.Duration, "duration", 65*time.Second, "quota: how long the clients ask at least (more than a minute crosses a window); the run then goes on until every action was refused once, within --timeout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "calibrate" {
			f.CalibrateSet = true
		}
	})
	w, err := workload.ParseWork(f.WorkText)
	if err != nil {
		return nil, fmt.Errorf("--work: %w", err)
	}
	f.Workload.Work = w
	return f, f.validate()
}

func (f *Flags) validate() error {
	switch f.Mode {
	case "throughput", "crash":
		if err := f.Workload.Validate(); err != nil {
			return err
		}
	case "memory":
		if f.Queued == 0 {
			f.Queued = 100000
		}
	case "sweep":
		if f.Queued == 0 {
			f.Queued = 1000000
		}
		if f.IdleActions < 1 || f.Due < 1 || f.SweepPasses < 1 {
			return errors.New("--idle-actions, --due and --sweep-passes must be >= 1")
		}
	case "throttle", "quota":
		if err := f.Workload.Validate(); err != nil {
			return err
		}
		if f.Workload.Processes != 1 {
			return fmt.Errorf("--mode %s runs in one process: --processes must be 1", f.Mode)
		}
		if _, err := limits.ParseRateSpec(f.RateText, f.Burst); err != nil {
			return fmt.Errorf("--rate %q --burst %d: %w", f.RateText, f.Burst, err)
		}
		if _, err := limits.ParseQuotaSpec(f.QuotaText); err != nil {
			return fmt.Errorf("--quota %q: %w", f.QuotaText, err)
		}
		if f.Duration <= 0 {
			return errors.New("--duration must be > 0")
		}
	default:
		return fmt.Errorf("--mode %q: want throughput, memory, sweep, crash, throttle or quota", f.Mode)
	}
	if f.Queued < 0 || f.IDBytes < 8 || f.IDBytes > 255 {
		return errors.New("--queued must be >= 0 and --id-bytes within 8..255")
	}
	if f.Mode == "crash" {
		if f.Workload.Processes < 2 {
			return errors.New("--mode crash needs --processes >= 2 (one is killed)")
		}
		if f.KillWhen != "holding" && f.KillWhen != "waiting" {
			return fmt.Errorf("--kill-when %q: want holding or waiting", f.KillWhen)
		}
		if f.KillAfter <= 0 || f.KillAfter >= 1 {
			return errors.New("--kill-after must be within (0, 1)")
		}
	}
	switch {
	case f.Via != "library" && f.Via != "http":
		return fmt.Errorf("--via %q: want library or http", f.Via)
	case f.Via == "http" && (f.Mode != "throughput" || f.Workload.Processes != 1):
		return errors.New("--via http runs in --mode throughput with --processes 1 (the daemons run in the bench process)")
	case f.Via == "http" && f.Daemons < 1:
		return errors.New("--daemons must be >= 1")
	}
	if f.Baseline != "" && f.Baseline != "polling" {
		return fmt.Errorf("--baseline %q: want polling", f.Baseline)
	}
	if f.Redis != "" {
		if err := loadgen.CheckLoopback(f.Redis); err != nil {
			return err
		}
	}
	targets := 0
	for _, set := range []bool{f.Redis != "", f.Cluster != "", f.StartCluster, f.StartRedis} {
		if set {
			targets++
		}
	}
	if targets > 1 {
		return errors.New("give at most one of --redis, --cluster, --start-cluster and --start-redis")
	}
	if f.Cluster != "" {
		if _, err := parseSeeds(f.Cluster); err != nil {
			return err
		}
	}
	if (f.Cluster != "" || f.StartCluster) && f.Mode != "throughput" {
		return fmt.Errorf("--mode %s: a cluster is measured in throughput mode only", f.Mode)
	}
	if (f.Cluster != "" || f.StartCluster) && (f.Baseline != "" || f.Via == "http") {
		return errors.New("--baseline and --via http: not on a cluster")
	}
	if f.WaitReplicas < 0 || f.WaitTimeout < time.Millisecond {
		return errors.New("--wait-replicas must be >= 0 and --wait-timeout at least 1ms")
	}
	if f.AckTimeout >= f.LeaseTTL {
		return errors.New("--ack-timeout must be below --lease-ttl")
	}
	if f.Timeout <= 0 {
		return errors.New("--timeout must be > 0")
	}
	if strings.ContainsAny(f.KeyPrefix, "{}") || strings.TrimSpace(f.KeyPrefix) != f.KeyPrefix {
		return fmt.Errorf("--key-prefix %q: no braces and no surrounding spaces", f.KeyPrefix)
	}
	return nil
}

// Main runs the bench and returns the exit code. When the environment holds
// a child spec (loadgen.ChildEnv), it runs as a child executor process.
func Main(args []string, stdout, stderr io.Writer) int {
	if spec := os.Getenv(loadgen.ChildEnv); spec != "" {
		return childMain(spec, stderr)
	}
	f, err := Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return ExitError
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()

	r, err := run(ctx, f, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return ExitError
	}
	if f.JSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return ExitError
	}
	if len(r.Failed) > 0 {
		return ExitBroken
	}
	return ExitOK
}

func childMain(specJSON string, stderr io.Writer) int {
	var spec loadgen.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(stderr, "bench child: bad spec:", err)
		return ExitError
	}
	if err := loadgen.RunChild(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(stderr, "bench child %d: %v\n", spec.Config.Process, err)
		return ExitError
	}
	return ExitOK
}

// env is the Redis a run measures.
type env struct {
	url       string
	cluster   []string // seeds, for a cluster run
	stop      func()   // stops what --start-cluster or --start-redis started
	miniredis bool
	version   string
	prefix    string
	mr        *miniredis.Miniredis
}

func setup(ctx context.Context, f *Flags) (*env, error) {
	e := &env{url: f.Redis, prefix: "bench-" + randomHex(4)}
	if f.KeyPrefix != "" {
		e.prefix = f.KeyPrefix + ":" + e.prefix
	}
	switch {
	case f.StartCluster:
		seeds, stop, err := startCluster()
		if err != nil {
			return nil, err
		}
		e.cluster, e.stop = seeds, stop
	case f.Cluster != "":
		e.cluster, _ = parseSeeds(f.Cluster)
	case f.StartRedis:
		url, stop, err := startRedis()
		if err != nil {
			return nil, err
		}
		e.url, e.stop = url, stop
	}
	if len(e.cluster) > 0 {
		rdb, _, err := loadgen.ConnectCluster(e.cluster, 2)
		if err != nil {
			e.close()
			return nil, err
		}
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			e.close()
			return nil, fmt.Errorf("cluster %v: %w", e.cluster, err)
		}
		e.version = redisstats.ServerVersion(ctx, rdb)
		return e, nil
	}
	if e.url == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("starting miniredis: %w", err)
		}
		e.mr, e.miniredis, e.url = mr, true, "redis://"+mr.Addr()
		return e, nil
	}
	rdb, _, err := loadgen.Connect(e.url, 2)
	if err != nil {
		e.close()
		return nil, err
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		e.close()
		return nil, fmt.Errorf("redis %s: %w", e.url, err)
	}
	e.version = redisstats.ServerVersion(ctx, rdb)
	return e, nil
}

func (e *env) close() {
	if e.mr != nil {
		e.mr.Close()
	}
	if e.stop != nil {
		e.stop()
	}
}

func (e *env) target() string {
	if e.miniredis {
		return "in-process miniredis: NOT Redis figures (use --redis redis://127.0.0.1:PORT)"
	}
	if len(e.cluster) > 0 {
		return fmt.Sprintf("Redis Cluster %s seeded with %s", e.version, strings.Join(e.cluster, ","))
	}
	return fmt.Sprintf("Redis %s at %s", e.version, loadgen.Host(e.url))
}

func (e *env) newReport(mode string) *report.Report {
	r := &report.Report{Mode: mode, Target: e.target(), RedisVersion: e.version, Miniredis: e.miniredis}
	if e.miniredis {
		r.Notes = append(r.Notes, "miniredis runs in this process: these figures say nothing about Redis performance")
	}
	return r
}

// cleanup deletes every key of the run (bounded: at most maxRounds SCAN rounds).
func (e *env) cleanup(rdb *redis.Client) {
	if e.miniredis {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cursor uint64
	for range 100000 {
		keys, next, err := rdb.Scan(ctx, cursor, e.prefix+":*", 5000).Result()
		if err != nil {
			return
		}
		if len(keys) > 0 {
			rdb.Unlink(ctx, keys...)
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

func run(ctx context.Context, f *Flags, stderr io.Writer) (*report.Report, error) {
	e, err := setup(ctx, f)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if len(e.cluster) > 0 {
		return runClusterThroughput(ctx, f, e, stderr)
	}
	switch f.Mode {
	case "memory":
		return runMemory(ctx, f, e)
	case "sweep":
		return runSweep(ctx, f, e, stderr)
	case "crash":
		return runCrash(ctx, f, e, stderr)
	case "throttle":
		return runThrottle(ctx, f, e)
	case "quota":
		return runQuota(ctx, f, e)
	}
	return runThroughput(ctx, f, e, stderr)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

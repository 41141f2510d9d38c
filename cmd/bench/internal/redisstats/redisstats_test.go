package redisstats

import (
	"context"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/redistest"
)

const sample = `# Commandstats
cmdstat_hset:calls=10,usec=13,usec_per_call=1.30,rejected_calls=0,failed_calls=0
cmdstat_evalsha:calls=4,usec=87,usec_per_call=21.75,rejected_calls=0,failed_calls=0
cmdstat_config|resetstat:calls=1,usec=103,usec_per_call=103.00,rejected_calls=0,failed_calls=0
`

func TestParseCommandStats(t *testing.T) {
	got := ParseCommandStats(sample)
	want := CommandStats{"hset": 10, "evalsha": 4, "config|resetstat": 1}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	if u := ParseCommandUsec(sample); u["evalsha"] != 87 || u["hset"] != 13 {
		t.Errorf("usec %v", u)
	}
	before := CommandStats{"hset": 4, "evalsha": 4}
	d := got.Sub(before)
	if d["hset"] != 6 || d["config|resetstat"] != 1 || len(d) != 2 || d.Total() != 7 {
		t.Errorf("diff %v", d)
	}
}

func TestParseInfoField(t *testing.T) {
	info := "# Memory\r\nused_memory:1234\r\nused_memory_human:1.2K\r\n"
	if got := ParseInfoField(info, "used_memory"); got != "1234" {
		t.Errorf("got %q", got)
	}
	if got := ParseInfoField(info, "maxmemory"); got != "" {
		t.Errorf("got %q", got)
	}
}

// cpuSample is INFO cpu as Redis 7.0 writes it (CRLF line ends).
const cpuSample = "# CPU\r\n" +
	"used_cpu_sys:1.250000\r\n" +
	"used_cpu_user:2.000125\r\n" +
	"used_cpu_sys_children:9.000000\r\n" +
	"used_cpu_user_children:9.000000\r\n" +
	"used_cpu_sys_main_thread:1.200000\r\n" +
	"used_cpu_user_main_thread:1.900000\r\n"

func TestParseCPU(t *testing.T) {
	// user + sys of the server process only: not its children, and not the
	// main-thread subset counted twice.
	got, err := ParseCPU(cpuSample)
	if err != nil || got != 3_250_125 {
		t.Fatalf("ParseCPU = %d, %v; want 3250125 µs", got, err)
	}
	for _, bad := range []string{
		"# CPU\r\nused_cpu_sys:1.0\r\n", // no used_cpu_user
		"# CPU\r\nused_cpu_sys_children:1.0\r\nused_cpu_user_children:1.0\r\n",
		"used_cpu_sys:1.0\r\nused_cpu_user:fast\r\n",
		"used_cpu_sys:-1.0\r\nused_cpu_user:1.0\r\n",
		"",
	} {
		if n, err := ParseCPU(bad); err == nil || !strings.Contains(err.Error(), "INFO cpu") {
			t.Errorf("ParseCPU(%q) = %d, %v; want an INFO cpu error", bad, n, err)
		}
	}
}

func TestCounterCountsCommandsAndRoundTrips(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	s := redis.NewScript("return 1")
	c := NewCounter(map[string]string{s.Hash(): "one"})
	rdb.AddHook(c)
	ctx := context.Background()
	rdb.Ping(ctx) // the connection's handshake (HELLO, CLIENT SETINFO) is counted too
	before := c.Snapshot()
	if err := s.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Ping(ctx)
	s.Run(ctx, rdb, nil)
	rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "x")
		p.Incr(ctx, "x")
		return nil
	})
	got := c.Snapshot().Sub(before)
	if got.RoundTrips != 4 {
		t.Errorf("round trips %d, want 4 (load, ping, evalsha, one pipeline)", got.RoundTrips)
	}
	if got.Commands["script:one"] != 1 || got.Commands["incr"] != 2 || got.Commands["ping"] != 1 {
		t.Errorf("commands %v", got.Commands)
	}
	sum := got.Add(Counts{Commands: map[string]int64{"ping": 2}, RoundTrips: 2})
	if sum.Commands["ping"] != 3 || sum.RoundTrips != 6 || got.Commands["ping"] != 1 {
		t.Errorf("add %v (original %v)", sum, got)
	}
}

// TestReadCPUOnRedis: a real Redis reports its CPU time, and the time grows
// while it works.
func TestReadCPUOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	before, err := ReadCPU(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	// A script that keeps Redis busy for a while: at least a millisecond of
	// CPU, far above the microsecond resolution of INFO cpu.
	busy := redis.NewScript(`local n = 0 for i = 1, 2000000 do n = n + i end return n`)
	if err := busy.Run(ctx, rdb, nil).Err(); err != nil {
		t.Fatal(err)
	}
	after, err := ReadCPU(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("redis cpu %d µs -> %d µs", before, after)
	if after <= before {
		t.Errorf("Redis CPU did not grow over a busy script: %d -> %d µs", before, after)
	}
}

package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/internal/redistest"
)

// TestMain lets the test binary serve as a bench child process, as the bench
// binary does, so that --processes > 1 works under go test.
func TestMain(m *testing.M) {
	if os.Getenv(loadgen.ChildEnv) != "" {
		os.Exit(Main(nil, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// bench runs the command and decodes its one JSON object.
func bench(t *testing.T, args ...string) (int, map[string]any) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(append(args, "--json", "--progress", "off"), &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	var m map[string]any
	if code != ExitError {
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("stdout is not one JSON object: %v\n%s", err, out.String())
		}
	}
	return code, m
}

func num(t *testing.T, m map[string]any, path ...string) float64 {
	t.Helper()
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%v: not an object at %q", path, p)
		}
		v = mm[p]
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%v = %#v, want a number", path, v)
	}
	return f
}

func checkPromises(t *testing.T, m map[string]any, limit float64) {
	t.Helper()
	if num(t, m, "limit_violations") != 0 || num(t, m, "fifo_inversions") != 0 || num(t, m, "lost") != 0 {
		t.Errorf("promises broken: violations %v inversions %v lost %v",
			m["limit_violations"], m["fifo_inversions"], m["lost"])
	}
	if got := num(t, m, "max_concurrency_seen"); got < 1 || got > limit {
		t.Errorf("max_concurrency_seen %v, want 1..%v", got, limit)
	}
}

func TestThroughputOnMiniredis(t *testing.T) {
	code, m := bench(t, "--actions", "2", "--limit", "2", "--executions", "40", "--clients", "6", "--work", "exp:1ms")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	checkPromises(t, m, 2)
	if m["miniredis"] != true || !strings.Contains(m["target"].(string), "NOT Redis figures") {
		t.Errorf("miniredis run does not say so: %v %v", m["miniredis"], m["target"])
	}
	if num(t, m, "admitted") != 80 || num(t, m, "handoffs") == 0 {
		t.Errorf("admitted %v handoffs %v", m["admitted"], m["handoffs"])
	}
	if _, ok := m["calibration"]; ok {
		t.Error("calibrated on miniredis without --calibrate")
	}
	if w := m["workload"].(map[string]any); w["work"] != "exp:1ms" || w["executions"] != 40.0 {
		t.Errorf("workload %v", w)
	}
	if _, ok := m["redis_cpu_us_per_admission"]; ok {
		t.Error("a Redis CPU figure on miniredis")
	}
	if !hasNote(m, "miniredis has no INFO cpu: redis_cpu_us_per_admission needs --redis") {
		t.Errorf("no note on the missing Redis CPU figure: %v", m["notes"])
	}
}

func hasNote(m map[string]any, note string) bool {
	notes, _ := m["notes"].([]any)
	for _, n := range notes {
		if n == note {
			return true
		}
	}
	return false
}

// checkRedisCPU: a run on real Redis reports the server's CPU time per
// admission, and the rate at which it would fill one core.
func checkRedisCPU(t *testing.T, m map[string]any) {
	t.Helper()
	us := num(t, m, "redis_cpu_us_per_admission")
	bound := num(t, m, "redis_server_cpu_bound_admissions_per_s")
	t.Logf("%v: Redis CPU %.1f µs per admission, one core: %.0f/s", m["limiter"], us, bound)
	if us <= 0 || math.Abs(bound*us-1e6) > 1 {
		t.Errorf("redis_cpu_us_per_admission %v, redis_server_cpu_bound_admissions_per_s %v", us, bound)
	}
}

func TestThroughputOnRedisOneProcess(t *testing.T) {
	srv := redistest.Start(t)
	code, m := bench(t, "--redis", "redis://"+srv.Addr, "--actions", "2", "--limit", "2", "--executions", "60",
		"--clients", "8", "--calibrate=false")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	checkPromises(t, m, 2)
	checkRedisCPU(t, m)
	if notes, ok := m["notes"]; ok {
		t.Errorf("notes on a plain Redis run: %v", notes)
	}
}

func TestThroughputOnRedisWithProcessesAndBaseline(t *testing.T) {
	srv := redistest.Start(t)
	code, m := bench(t, "--redis", "redis://"+srv.Addr, "--actions", "2", "--limit", "2", "--executions", "60",
		"--clients", "8", "--processes", "2", "--baseline", "polling", "--calibrate-duration", "100ms")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	checkPromises(t, m, 2)
	for _, f := range []string{"redis_cmds_per_admission", "ceiling_admissions_per_s", "efficiency", "wall_s"} {
		if num(t, m, f) <= 0 {
			t.Errorf("%s = %v", f, m[f])
		}
	}
	if num(t, m, "calibration", "evalsha_ops_per_s") <= 0 {
		t.Error("no calibration")
	}
	// Every admission runs one enqueue and one release script.
	per := m["commands_per_admission"].(map[string]any)
	if per["script:enqueue"] != 1.0 || per["script:release"] != 1.0 {
		t.Errorf("commands per admission %v", per)
	}
	base := m["baseline_polling"].(map[string]any)
	if num(t, base, "limit_violations") != 0 || num(t, base, "lost") != 0 || num(t, base, "admitted") != 120 {
		t.Errorf("baseline %v", base)
	}
	checkRedisCPU(t, m)
	checkRedisCPU(t, base)
}

func TestCrashOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	for _, when := range []string{"holding", "waiting"} {
		t.Run(when, func(t *testing.T) {
			code, m := bench(t, "--redis", "redis://"+srv.Addr, "--mode", "crash", "--processes", "2",
				"--actions", "2", "--limit", "2", "--clients", "8", "--executions", "200", "--work", "2ms",
				"--lease-ttl", "1s", "--ack-timeout", "300ms", "--sweep-interval", "100ms", "--kill-when", when)
			if code == ExitError {
				t.Fatalf("exit %d", code)
			}
			checkPromises(t, m, 2)
			c := m["crash"].(map[string]any)
			if num(t, c, "survivors_lost") != 0 {
				t.Errorf("survivors lost executions: %v", c)
			}
			if when == "holding" && num(t, c, "victim_holding") == 0 {
				t.Logf("the victim held no slot when killed: %v", c) // a scheduling accident, not a failure
			}
			if when == "waiting" && num(t, c, "victim_holding") != 0 {
				t.Errorf("killed while holding: %v", c)
			}
		})
	}
}

func TestMemoryAndSweepOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	code, m := bench(t, "--redis", "redis://"+srv.Addr, "--mode", "memory", "--queued", "3000")
	if code != ExitOK {
		t.Fatalf("memory: exit %d", code)
	}
	mem := m["memory"].(map[string]any)
	if b := num(t, mem, "bytes_per_queued"); b < 36 || b > 1000 {
		t.Errorf("bytes_per_queued %v", b)
	}
	if num(t, mem, "enqueue_1000_ms") <= 0 {
		t.Error("no burst figure")
	}
	code, m = bench(t, "--redis", "redis://"+srv.Addr, "--mode", "sweep", "--idle-actions", "50",
		"--queued", "2000", "--due", "3", "--sweep-passes", "2")
	if code != ExitOK {
		t.Fatalf("sweep: exit %d", code)
	}
	s := m["sweep"].(map[string]any)
	if num(t, s, "due_visited") != 6 || num(t, s, "due_reclaimed") != 6 || num(t, s, "due_granted") != 6 {
		t.Errorf("sweep %v", s)
	}
	if len(s["idle_pass_ms"].([]any)) != 2 {
		t.Errorf("idle passes %v", s["idle_pass_ms"])
	}
}

func TestFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--redis", "redis://10.0.0.1:6379"},
		{"--redis", "redis://example.com:6379"},
		{"--mode", "crash"},
		{"--mode", "nope"},
		{"--work", "poisson:1ms"},
		{"--clients", "4"},
		{"--baseline", "token-bucket"},
		{"--ack-timeout", "40s"},
		{"--mode", "throttle", "--rate", "100"},
		{"--mode", "throttle", "--rate", "100/1m", "--burst", "-1"},
		{"--mode", "throttle", "--processes", "2"},
		{"--mode", "quota", "--quota", "10/week"},
		{"--mode", "quota", "--duration", "0s"},
		{"--cluster", "10.0.0.1:7000,127.0.0.1:7001"},
		{"--cluster", ","},
		{"--cluster", "127.0.0.1:7000", "--redis", "redis://127.0.0.1:6379"},
		{"--start-cluster", "--start-redis"},
		{"--start-cluster", "--mode", "memory"},
		{"--start-cluster", "--baseline", "polling"},
		{"--start-cluster", "--via", "http"},
		{"--wait-replicas", "-1"},
		{"--start-cluster", "--mode", "throttle"},
		{"--start-cluster", "--mode", "quota"},
	} {
		var out, errOut bytes.Buffer
		if code := Main(args, &out, &errOut); code != ExitError || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q", args, code, out.String())
		}
	}
	for _, ok := range []string{"redis://127.0.0.1:6379", "redis://localhost:1", "redis://[::1]:6379"} {
		if err := loadgen.CheckLoopback(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}

// TestCalibrateFlagHelp: --calibrate's help states its automatic default
// once, without a contradicting "(default true)"; unset, it follows the
// Redis in use.
func TestCalibrateFlagHelp(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := Parse([]string{"--help"}, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	help := errOut.String()
	i := strings.Index(help, "-calibrate\n")
	if i < 0 {
		t.Fatalf("no --calibrate in the help:\n%s", help)
	}
	line := help[i:]
	line = line[:strings.Index(line[len("-calibrate\n"):], "\n")+len("-calibrate\n")]
	if strings.Contains(line, "(default") || !strings.Contains(line, "unset, on with --redis and off on miniredis") {
		t.Fatalf("--calibrate help: %q", line)
	}
	for _, tc := range []struct {
		args           []string
		miniredis, cal bool
	}{
		{nil, true, false}, {nil, false, true},
		{[]string{"--calibrate"}, true, true}, {[]string{"--calibrate=false"}, false, false},
	} {
		f, err := Parse(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.calibrating(&env{miniredis: tc.miniredis}); got != tc.cal {
			t.Errorf("%v on miniredis=%v: calibrating %v, want %v", tc.args, tc.miniredis, got, tc.cal)
		}
	}
}

// TestClusterThroughput runs the bench on a Redis Cluster it starts, with
// durable writes, and checks the per-master figures it reports.
func TestClusterThroughput(t *testing.T) {
	if !redistest.Available() {
		if redistest.Required() {
			t.Fatal("BATON_REQUIRE_REDIS=1 but redis-server is not on PATH")
		}
		t.Skip("redis-server not on PATH")
	}
	var out, errOut bytes.Buffer
	code := Main([]string{"--start-cluster", "--actions", "12", "--executions", "20", "--clients", "24",
		"--wait-replicas", "1", "--calibrate=false", "--json", "--progress", "off"}, &out, &errOut)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var r struct {
		Lost            int     `json:"lost"`
		Admitted        int     `json:"admitted"`
		BusiestOverMean float64 `json:"busiest_over_mean"`
		Masters         []struct {
			Actions int   `json:"actions"`
			CPUUs   int64 `json:"cpu_us"`
		} `json:"masters"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	actions := 0
	for _, m := range r.Masters {
		actions += m.Actions
		if m.CPUUs <= 0 {
			t.Errorf("a master with no CPU time: %+v", r.Masters)
		}
	}
	if len(r.Masters) != 3 || actions != 12 || r.Lost != 0 || r.Admitted != 240 || r.BusiestOverMean < 1 {
		t.Fatalf("report: %s", out.String())
	}
	t.Logf("busiest master over the mean: %.2f", r.BusiestOverMean)
}

// TestThroughputViaHTTP: --via http runs the same workload through the HTTP
// admission API of in-process daemons after the library path, keeps the
// promises on both, and compares them in a note.
func TestThroughputViaHTTP(t *testing.T) {
	srv := redistest.Start(t)
	code, m := bench(t, "--redis", "redis://"+srv.Addr, "--actions", "2", "--limit", "2", "--executions", "40",
		"--clients", "6", "--calibrate=false", "--via", "http")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	checkPromises(t, m, 2)
	h, ok := m["via_http"].(map[string]any)
	if !ok {
		t.Fatalf("no via_http figures: %v", m)
	}
	checkPromises(t, h, 2)
	if num(t, h, "admitted") != 80 || num(t, h, "http_calls_per_admission") < 2 {
		t.Errorf("via http: admitted %v, http calls per admission %v", h["admitted"], h["http_calls_per_admission"])
	}
	found := false
	for _, n := range m["notes"].([]any) {
		found = found || strings.HasPrefix(n.(string), "via http: ")
	}
	if !found {
		t.Errorf("no note comparing the HTTP path with the library's: %v", m["notes"])
	}
	for _, bad := range [][]string{{"--via", "grpc"}, {"--via", "http", "--processes", "2"}, {"--via", "http", "--mode", "memory"}, {"--via", "http", "--daemons", "0"}} {
		if code, _ := bench(t, bad...); code != ExitError {
			t.Errorf("%v: exit %d, want %d", bad, code, ExitError)
		}
	}
}

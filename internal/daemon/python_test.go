package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// TestPythonAndGoWorkers runs a mixed fleet on one action limited to 1,
// against one daemon on a real redis-server: two Python workers
// (examples/python/worker.py, admitted over the HTTP API) and a Go worker
// (the library). Every admission and end goes to one file opened O_APPEND
// by all three, written while the slot is held, so the file's order is the
// real order. The action is paused until the three wait. The test checks, from the file alone: never more than one
// holder; admissions in FIFO order (enqueue seqs increasing) and fencing
// tokens increasing; every execution admitted once and ended once. One
// Python worker holds its last slot, heartbeating, for two lease TTLs
// (nobody else may be admitted meanwhile), then is SIGKILLed: its slot must
// come back within the lease TTL (plus the sweep and a slow machine's
// slack), and the counters must show one reclaimed lease and nothing else
// lost.
func TestPythonAndGoWorkers(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if redistest.Required() {
			t.Fatal("python3 is not on PATH (BATON_REQUIRE_REDIS=1: .ci/run installs it)")
		}
		t.Skip("python3 is not on PATH")
	}
	srv := redistest.SharedServer(t)
	const (
		action = "fleet.mixed"
		ttl    = 5 * time.Second
		hold   = 50 * time.Millisecond
	)
	prefix := fmt.Sprintf("py%d", time.Now().UnixNano()%1_000_000)
	cfg := load(t, "BATON_REDIS_URL=redis://"+srv.Addr, "BATON_KEY_PREFIX="+prefix, "BATON_LEASE_TTL="+ttl.String(),
		"BATON_LEASE_ACK_TIMEOUT=1s", "BATON_SWEEP_INTERVAL=100ms", "BATON_HTTP_AUTH_TOKEN=fleet-token")
	d := start(t, cfg)
	ctx := redistest.Context(t)

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 30 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	log := redistest.NewLog(t)
	c, err := coordinator.New(rdb, coordinator.Options{Prefix: prefix, LeaseTTL: ttl, Logger: log.Logger("go-worker")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Paused (limit 0) until all three workers wait, so that they compete
	// from the first admission on.
	if err := c.SetConcurrencyLimit(ctx, limits.Action(action), 0); err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(t.TempDir(), "holders.log")
	worker := func(name string, executions, hangAfter int) (*exec.Cmd, chan error) {
		cmd := exec.Command(python, "../../examples/python/worker.py", "--url", "http://"+d.addr,
			"--auth-token", "fleet-token", "--action", action, "--name", name,
			"--executions", strconv.Itoa(executions), "--hold", strconv.FormatFloat(hold.Seconds(), 'f', -1, 64),
			"--log", logPath, "--hang-after", strconv.Itoa(hangAfter))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
		})
		return cmd, done
	}
	py1, _ := worker("py1", 3, 3) // its third slot is held until it is killed
	_, py2 := worker("py2", 6, 0)

	lines := func() []string {
		b, _ := os.ReadFile(logPath)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	goDone := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			goDone <- err
			return
		}
		defer f.Close()
		for i := 1; i <= 6; i++ {
			id := fmt.Sprintf("go-%d", i)
			l, err := c.EnqueueAndWait(ctx, action, id)
			if err != nil {
				goDone <- err
				return
			}
			fmt.Fprintf(f, "start go %s %d %d\n", id, l.Token(), l.Seq())
			time.Sleep(hold)
			fmt.Fprintf(f, "end go %s %d\n", id, l.Token())
			if err := l.Release(ctx); err != nil {
				goDone <- err
				return
			}
		}
		goDone <- nil
	}()

	redistest.Eventually(t, 20*time.Second, "the three workers waiting", func() bool {
		st, err := c.QueueStats(ctx, action)
		return err == nil && st.QueueLength == 3
	})
	if err := c.SetConcurrencyLimit(ctx, limits.Action(action), 1); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 20*time.Second, "py1 holds its last slot", func() bool {
		for _, l := range lines() {
			if strings.HasPrefix(l, "start py1 py1-3 ") {
				return true
			}
		}
		return false
	})
	// py1 heartbeats over HTTP: its slot outlives two lease TTLs.
	time.Sleep(2 * ttl)
	before := lines()
	if last := before[len(before)-1]; !strings.HasPrefix(last, "start py1 py1-3 ") {
		t.Fatalf("another execution started while py1 held its slot and heartbeated: %q", last)
	}
	if err := py1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	redistest.Eventually(t, ttl+2*time.Second, "the next admission after py1 was killed", func() bool {
		return len(lines()) > len(before)
	})
	back := time.Since(killed)
	t.Logf("slot back %s after py1 was killed (lease TTL %s)", back.Round(time.Millisecond), ttl)
	// The lease's deadline is at most one TTL after the kill; a sweep (100 ms)
	// and a grant follow. The slack is for a loaded machine.
	if back > ttl+10*time.Second {
		t.Fatalf("slot came back %s after the kill, lease TTL %s", back, ttl)
	}

	select {
	case err := <-py2:
		if err != nil {
			t.Fatalf("py2: %v", err)
		}
	case <-time.After(redistest.SlowFloor):
		t.Fatal("py2 did not finish")
	}
	select {
	case err := <-goDone:
		if err != nil {
			t.Fatalf("go worker: %v", err)
		}
	case <-time.After(redistest.SlowFloor):
		t.Fatal("go worker did not finish")
	}

	checkFleetLog(t, lines(), len(before), "py1-3")
	st, err := c.QueueStats(ctx, action)
	if err != nil {
		t.Fatal(err)
	}
	const total = 3 + 6 + 6
	if st.ActiveCount != 0 || st.QueueLength != 0 || st.TotalEnqueued != total || st.TotalAdmitted != total ||
		st.TotalCompleted != total-1 || st.TotalReclaimed != 1 || st.TotalCanceled+st.TotalTimedOut+st.TotalAbandoned != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// checkFleetLog checks the shared holders file: lines[killedAt:] came after
// the kill of the holder of execution killed.
func checkFleetLog(t *testing.T, lines []string, killedAt int, killed string) {
	t.Helper()
	holder := ""
	started, ended := map[string]int{}, map[string]int{}
	var lastSeq, lastToken int64
	workers := map[string]bool{}
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) < 4 {
			t.Fatalf("line %d: %q", i+1, line)
		}
		id := f[2]
		token, _ := strconv.ParseInt(f[3], 10, 64)
		switch f[0] {
		case "start":
			seq, _ := strconv.ParseInt(f[4], 10, 64)
			if holder != "" && !(holder == killed && i >= killedAt) {
				t.Fatalf("line %d: %s admitted while %s held the slot (limit 1)", i+1, id, holder)
			}
			if seq <= lastSeq || token <= lastToken {
				t.Fatalf("line %d: %s admitted out of FIFO order: seq %d token %d after seq %d token %d",
					i+1, id, seq, token, lastSeq, lastToken)
			}
			holder, lastSeq, lastToken = id, seq, token
			started[id]++
			workers[f[1]] = true
		case "end":
			if holder != id {
				t.Fatalf("line %d: %s ended while %q held the slot", i+1, id, holder)
			}
			holder = ""
			ended[id]++
		default:
			t.Fatalf("line %d: %q", i+1, line)
		}
	}
	if len(workers) != 3 {
		t.Fatalf("admissions of %d workers, want 3: %v", len(workers), workers)
	}
	after := map[string]bool{} // who was admitted after the kill: the queue mixed both languages
	for _, line := range lines[killedAt:] {
		if f := strings.Fields(line); f[0] == "start" {
			after[f[1]] = true
		}
	}
	if !after["go"] || !after["py2"] {
		t.Fatalf("admissions after the kill came from %v, want both go and py2 (they waited together)", after)
	}
	for id, n := range started {
		want := 1
		if id == killed {
			want = 0
		}
		if n != 1 || ended[id] != want {
			t.Fatalf("%s: admitted %d times, ended %d times", id, n, ended[id])
		}
	}
	if len(started) != 15 {
		t.Fatalf("%d executions admitted, want 15", len(started))
	}
}

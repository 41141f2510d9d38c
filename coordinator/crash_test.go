package coordinator_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// Crash tests run a real OS process (this test binary, re-executed with
// BATON_CRASH_CHILD set, so TestMain runs crashChild) that holds or waits
// for slots, and SIGKILL it.

const (
	crashLease = 1500 * time.Millisecond
	crashAck   = 400 * time.Millisecond
	crashSweep = 100 * time.Millisecond
)

func crashOpts(prefix string) coordinator.Options {
	return coordinator.Options{Prefix: prefix, LeaseTTL: crashLease, AckTimeout: crashAck, SweepInterval: crashSweep}
}

// crashChild is the child process of the crash tests: TestMain runs it
// instead of the tests when BATON_CRASH_CHILD is set. It never returns; the
// parent kills it.
func crashChild(mode string) {
	rdb := dialAddrs(os.Getenv("BATON_CRASH_ADDR"))
	c, err := coordinator.New(rdb, crashOpts(os.Getenv("BATON_CRASH_PREFIX")))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	action := os.Getenv("BATON_CRASH_ACTION")
	n, _ := strconv.Atoi(os.Getenv("BATON_CRASH_N"))
	switch mode {
	case "hold":
		for i := 0; i < n; i++ {
			if _, err := c.EnqueueAndWait(ctx, action, fmt.Sprintf("child-hold-%d", i)); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
		}
		fmt.Println("ready")
	case "wait":
		for i := 0; i < n; i++ {
			go c.EnqueueAndWait(ctx, action, fmt.Sprintf("child-wait-%d", i))
		}
		for {
			st, err := c.QueueStats(ctx, action)
			if err == nil && st.QueueLength >= int64(n) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("ready")
	}
	time.Sleep(time.Minute) // killed long before
	os.Exit(1)
}

type child struct {
	cmd *exec.Cmd
}

func startChild(t *testing.T, addr, prefix, action, mode string, n int) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BATON_CRASH_CHILD="+mode, "BATON_CRASH_ADDR="+addr,
		"BATON_CRASH_PREFIX="+prefix, "BATON_CRASH_ACTION="+action, "BATON_CRASH_N="+strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line := sc.Text(); line == "ready" || strings.HasPrefix(line, "error") {
				ready <- line
				return
			}
		}
		ready <- "exited"
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			t.Fatalf("child: %s", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child not ready")
	}
	return &child{cmd: cmd}
}

func (ch *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	must(t, ch.cmd.Process.Signal(sig))
}

// freeze stops the child and waits until the kernel reports it stopped:
// kill(SIGSTOP) returns before the process actually stops.
func (ch *child) freeze(t *testing.T) {
	t.Helper()
	ch.signal(t, syscall.SIGSTOP)
	stat := fmt.Sprintf("/proc/%d/stat", ch.cmd.Process.Pid)
	eventually(t, 5*time.Second, "child stopped", func() bool {
		b, err := os.ReadFile(stat)
		if err != nil {
			return false
		}
		// The state follows the parenthesised command name: "pid (comm) T ...".
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i > 0 && i+2 < len(s) && (s[i+2] == 'T' || s[i+2] == 't')
	})
}

// crashTiers runs fn on a miniredis that follows the real clock (the child
// connects to it over TCP), on the real redis-server and on the cluster.
// addr is one address, or the cluster's seeds separated by commas.
func crashTiers(t *testing.T, fn func(t *testing.T, addr, prefix string)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		fn(t, mr.Addr(), "baton")
	})
	t.Run("redis", func(t *testing.T) {
		e := newRealEnv(t)
		fn(t, e.addr, e.prefix)
	})
	t.Run("cluster", func(t *testing.T) {
		e := newClusterEnv(t)
		fn(t, strings.Join(e.cluster.Seeds(), ","), e.prefix)
	})
}

// dialAddrs is a client of one address, or a cluster client of several
// separated by commas.
func dialAddrs(addrs string) redis.UniversalClient {
	seeds := strings.Split(addrs, ",")
	if len(seeds) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, ClusterStateReloadInterval: time.Second})
	}
	return redis.NewClient(&redis.Options{Addr: addrs})
}

func crashCoordinator(t *testing.T, addr, prefix string) *coordinator.Coordinator {
	rdb := dialAddrs(addr)
	t.Cleanup(func() { rdb.Close() })
	o := crashOpts(prefix)
	// The parent lives: a long lease, so that a starved test process is not
	// presumed dead; only the children use the short one.
	o.LeaseTTL = time.Minute
	c, err := coordinator.New(rdb, o)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitAdmitted returns how long after since the lease arrived.
// slowCap is how long a recovery with the given bound may take on a slow,
// shared machine before the test fails.
func slowCap(bound time.Duration) time.Duration { return 3*bound + slowFloor }

func waitAdmitted(t *testing.T, got chan *coordinator.Lease, since time.Time, bound time.Duration, what string) time.Duration {
	t.Helper()
	select {
	case l := <-got:
		d := time.Since(since)
		t.Logf("%s: next waiter admitted %s after the kill (bound %s)", what, d.Round(time.Millisecond), bound)
		if d > bound {
			t.Logf("%s: over the bound: the machine is slow (this test fails only past %s)", what, slowCap(bound))
		}
		must(t, l.Release(context.Background()))
		return d
	case <-time.After(slowCap(bound)):
		t.Fatalf("%s: next waiter never admitted (waited %s)", what, slowCap(bound))
	}
	return 0
}

const slack = 700 * time.Millisecond // scheduling, -race, a loaded 2-core box

// TestCrashHolder: a process holding the slot dies; the slot comes back
// within LeaseTTL + one sweep interval and the next waiter is admitted.
func TestCrashHolder(t *testing.T) {
	crashTiers(t, func(t *testing.T, addr, prefix string) {
		const a = "crash.hold"
		c := crashCoordinator(t, addr, prefix)
		ctx := ctxT(t)
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		ch := startChild(t, addr, prefix, a, "hold", 1)
		got := waiters(t, c, a, "parent", 1)
		eventually(t, 5*time.Second, "queued", func() bool { st, _ := c.QueueStats(ctx, a); return st.QueueLength == 1 })
		ch.signal(t, syscall.SIGKILL)
		killed := time.Now()
		waitAdmitted(t, got, killed, crashLease+crashSweep+slack, "holder killed")
		st, _ := c.QueueStats(ctx, a)
		if st.TotalReclaimed != 1 {
			t.Fatalf("want 1 reclaimed slot: %+v", st)
		}
	})
}

// TestCrashWaiters: a process with five waiters at the head of the queue
// dies. Its first grant stays unread; once the process's own liveness lapses
// (LeaseTTL after its last heartbeat) that grant is dropped and the other
// four are skipped, not granted one by one.
func TestCrashWaiters(t *testing.T) {
	crashTiers(t, func(t *testing.T, addr, prefix string) {
		const a = "crash.wait"
		c := crashCoordinator(t, addr, prefix)
		ctx := ctxT(t)
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, c, a, 1)[0]
		ch := startChild(t, addr, prefix, a, "wait", 5)
		got := waiters(t, c, a, "parent", 1)
		eventually(t, 5*time.Second, "queued", func() bool { st, _ := c.QueueStats(ctx, a); return st.QueueLength == 6 })
		ch.signal(t, syscall.SIGKILL)
		killed := time.Now()
		must(t, holder.Release(ctx))
		// One unread grant until the process counts as dead, then the rest are skipped at once.
		waitAdmitted(t, got, killed, crashLease+crashAck+crashSweep+slack, "waiting process killed")
		st, _ := c.QueueStats(ctx, a)
		// The first grant is dropped unread (abandoned), or, if the dying
		// child's BLPOP popped it as the kill landed, reclaimed as a lease of
		// a dead process; the other four are skipped.
		if st.TotalAbandoned+st.TotalReclaimed != 5 || st.TotalReclaimed > 1 || st.QueueLength != 0 {
			t.Fatalf("want the first grant dropped or reclaimed and 4 waiters skipped: %+v", st)
		}
	})
}

// TestCrashGrantInFlight: the waiter's process is frozen (SIGSTOP), granted
// the slot, then killed before it could read the grant. The grant is
// dropped once the process's liveness lapses and its deadline passes.
func TestCrashGrantInFlight(t *testing.T) {
	crashTiers(t, func(t *testing.T, addr, prefix string) {
		const a = "crash.inflight"
		c := crashCoordinator(t, addr, prefix)
		ctx := ctxT(t)
		must(t, c.SetConcurrencyLimit(ctx, limits.Action(a), 1))
		holder := holdN(t, c, a, 1)[0]
		ch := startChild(t, addr, prefix, a, "wait", 1)
		got := waiters(t, c, a, "parent", 1)
		eventually(t, 5*time.Second, "queued", func() bool { st, _ := c.QueueStats(ctx, a); return st.QueueLength == 2 })
		ch.freeze(t)
		must(t, holder.Release(ctx))
		st, err := c.ExecutionState(ctx, a, "child-wait-0")
		must(t, err)
		if st.Status != coordinator.StatusRunning || st.Acknowledged {
			t.Fatalf("want the frozen child granted and unacknowledged: %+v", st)
		}
		ch.signal(t, syscall.SIGKILL)
		killed := time.Now()
		waitAdmitted(t, got, killed, crashLease+crashAck+crashSweep+slack, "grant in flight")
	})
}

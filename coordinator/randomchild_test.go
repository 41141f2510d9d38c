package coordinator_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
)

// The "redis-pause" run of TestRandomFaults also runs a Coordinator in a
// child process (this test binary, re-run with BATON_FAULT_CHILD set: TestMain runs it)
// and freezes it with SIGSTOP for less than LeaseTTL. The child reports on
// stdout; before each release it waits for the parent's go-ahead on stdin,
// so the parent's bookkeeping drops the holder before the slot is free.
//
//	child -> parent: RF ready <owner>
//	                 RF acq <action> <id> <token> <call start, unix ns>
//	                 RF rel <n> <action> <token> <lost before release: 0|1>
//	                 RF released <action> <token> <ok|lost|other> <error>
//	                 RF err <action> <id> <class> <context done: 0|1> <error>
//	                 RF closed
//	parent -> child: go <n>; stop

// randomFaultsChild is the child process of TestRandomFaults: TestMain
// runs it (and exits) when BATON_FAULT_CHILD is set, so no test is skipped
// in an ordinary run.
func randomFaultsChild() {
	seed, _ := strconv.ParseInt(os.Getenv("BATON_FAULT_SEED"), 10, 64)
	qt, _ := time.ParseDuration(os.Getenv("BATON_FAULT_QT"))
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("BATON_FAULT_ADDR"), PoolSize: 64})
	defer rdb.Close()
	c, err := coordinator.New(rdb, coordinator.Options{
		Prefix: os.Getenv("BATON_FAULT_PREFIX"), LeaseTTL: rfLeaseTTL, AckTimeout: rfAck, SweepInterval: rfSweep, QueueTimeout: qt,
	})
	if err != nil {
		fmt.Println("RF fatal", err)
		return
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		fmt.Printf("RF "+format+"\n", args...)
		outMu.Unlock()
	}
	var stop atomic.Bool
	var goMu sync.Mutex
	goAhead := map[int64]chan struct{}{}
	gate := func(n int64) chan struct{} {
		goMu.Lock()
		defer goMu.Unlock()
		ch := goAhead[n]
		if ch == nil {
			ch = make(chan struct{})
			goAhead[n] = ch
		}
		return ch
	}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 2 && f[0] == "go":
				n, _ := strconv.ParseInt(f[1], 10, 64)
				close(gate(n))
			case len(f) == 1 && f[0] == "stop":
				stop.Store(true)
			}
		}
		stop.Store(true) // the parent went away
	}()
	say("ready %s", c.Owner())

	ctx := context.Background()
	var wg sync.WaitGroup
	var rel atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(seed), uint64(2000+w)))
			for i := 0; !stop.Load() && i < rfMaxCalls; i++ {
				act := rfActions[r.IntN(len(rfActions))]
				id := fmt.Sprintf("child%d-%d", w, i)
				cctx, cancel := context.WithCancel(ctx)
				if r.IntN(2) == 0 {
					cctx, cancel = context.WithTimeout(ctx, time.Duration(200+r.IntN(4801))*time.Millisecond)
				}
				start := time.Now()
				l, err := c.EnqueueAndWait(cctx, act, id)
				done := cctx.Err() != nil
				cancel()
				if err != nil {
					say("err %s %s %s %d %s", act, id, rfClass(err), b2i(done), strings.ReplaceAll(err.Error(), "\n", " | "))
					continue
				}
				say("acq %s %s %d %d", act, id, l.Token(), start.UnixNano())
				select {
				case <-time.After(time.Duration(r.IntN(300)) * time.Millisecond):
				case <-l.Lost():
				}
				lost := false
				select {
				case <-l.Lost():
					lost = true
				default:
				}
				n := rel.Add(1)
				say("rel %d %s %d %d", n, act, l.Token(), b2i(lost))
				select {
				case <-gate(n):
				case <-time.After(time.Minute):
				}
				rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
				err = l.Release(rctx)
				rcancel()
				class := "ok"
				switch {
				case errors.Is(err, coordinator.ErrLeaseLost):
					class = "lost"
				case err != nil:
					class = "other"
				}
				msg := ""
				if err != nil {
					msg = strings.ReplaceAll(err.Error(), "\n", " | ")
				}
				say("released %s %d %s %s", act, l.Token(), class, msg)
			}
		}()
	}
	wg.Wait()
	c.Close()
	say("closed")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rfClass names the documented error err is, or "undocumented".
func rfClass(err error) string {
	switch {
	case errors.Is(err, coordinator.ErrQueueFull):
		return "queue_full"
	case errors.Is(err, coordinator.ErrQueueTimeout):
		return "queue_timeout"
	case errors.Is(err, coordinator.ErrCanceled):
		return "canceled"
	case errors.Is(err, coordinator.ErrLeaseLost):
		return "lease_lost"
	case errors.Is(err, coordinator.ErrClosed):
		return "closed"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "context"
	}
	return "undocumented"
}

// rfChild is the parent's handle on the child process.
type rfChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	owner  string
	closed chan struct{} // the child said "closed" (or its output ended)
	inMu   sync.Mutex
}

func (ch *rfChild) send(line string) {
	ch.inMu.Lock()
	defer ch.inMu.Unlock()
	_, _ = io.WriteString(ch.stdin, line+"\n")
}

func (ch *rfChild) signal(sig syscall.Signal) error { return ch.cmd.Process.Signal(sig) }

// startRFChild starts the child and feeds its reports to the harness.
func (h *rfHarness) startRFChild(t *testing.T, qt time.Duration) *rfChild {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1") // TestMain runs the child
	var env []string
	for _, kv := range os.Environ() {
		// No redis-server of its own (TestMain starts one when it is on PATH).
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "BATON_REQUIRE_REDIS=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PATH=/nonexistent", "BATON_FAULT_CHILD=1", "BATON_FAULT_ADDR="+h.e.addr,
		"BATON_FAULT_PREFIX="+h.e.prefix, "BATON_FAULT_SEED="+strconv.FormatInt(h.seed, 10), "BATON_FAULT_QT="+qt.String())
	stdin, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	ch := &rfChild{cmd: cmd, stdin: stdin, closed: make(chan struct{})}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		defer close(ch.closed)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "RF ") {
				continue
			}
			f := strings.SplitN(strings.TrimPrefix(line, "RF "), " ", 7)
			switch f[0] {
			case "ready", "fatal":
				ready <- line
			case "closed":
				return
			default:
				h.childReport(ch, f)
			}
		}
	}()
	select {
	case line := <-ready:
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "ready" {
			t.Fatalf("child: %s", line)
		}
		ch.owner = f[2]
	case <-time.After(30 * time.Second):
		t.Fatal("child not ready after 30s")
	}
	return ch
}

// childReport applies one report of the child to the bookkeeping.
func (h *rfHarness) childReport(ch *rfChild, f []string) {
	switch {
	case f[0] == "acq" && len(f) >= 5:
		act, id := f[1], f[2]
		fence, _ := strconv.ParseInt(f[3], 10, 64)
		ns, _ := strconv.ParseInt(f[4], 10, 64)
		h.count(h.outcomes, "lease (child)")
		h.mu.Lock()
		h.traceLocked(act+"/"+id, "child call: lease token %d", fence)
		h.recordLeaseLocked(act+"/"+id+" (child)", act, id, fence, time.Unix(0, ns))
		h.mu.Unlock()
	case f[0] == "rel" && len(f) >= 5:
		act := f[2]
		fence, _ := strconv.ParseInt(f[3], 10, 64)
		h.mu.Lock()
		if _, done := h.released[act][fence]; !done {
			h.released[act][fence] = 0
			delete(h.holders[act], fence)
		}
		h.mu.Unlock()
		if f[4] == "1" {
			h.count(h.notes, "child lease Lost() closed")
		}
		ch.send("go " + f[1])
	case f[0] == "released" && len(f) >= 4:
		act := f[1]
		fence, _ := strconv.ParseInt(f[2], 10, 64)
		switch f[3] {
		case "ok":
			h.mu.Lock()
			h.released[act][fence]++
			if h.released[act][fence] > 1 {
				h.violations = append(h.violations, fmt.Sprintf("%s: token %d released twice with success (child)", act, fence))
			}
			h.mu.Unlock()
		case "lost":
			h.count(h.notes, "child release: lease lost")
		default:
			h.violate("child: release of %s token %d: undocumented error: %s", act, fence, strings.Join(f[4:], " "))
		}
	case f[0] == "err" && len(f) >= 5:
		act, id, class, done := f[1], f[2], f[3], f[4] == "1"
		msg := strings.Join(f[5:], " ")
		h.count(h.outcomes, class+" (child)")
		h.tr(act+"/"+id, "child call: %s", msg)
		switch class {
		case "undocumented", "closed":
			h.violate("child: %s/%s: %s error: %s", act, id, class, msg)
		case "canceled":
			h.violate("child: %s/%s: live request (never canceled or re-attached) ended with %s", act, id, msg)
		case "context":
			if !done {
				h.violate("child: %s/%s: context error %s but the context is not done", act, id, msg)
			}
		case "lease_lost":
			if !done {
				h.count(h.notes, "child live request lease lost (SIGSTOP on)")
			}
		}
	default:
		h.violate("child: unreadable report %q", strings.Join(f, " "))
	}
}

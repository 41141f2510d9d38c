package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
)

// ChildEnv is the environment variable that makes the bench binary run as a
// child executor process; its value is the child's Spec as JSON.
const ChildEnv = "BATON_BENCH_CHILD"

// Spec is everything a child process needs.
type Spec struct {
	// Redis is the redis:// URL, unless Cluster names seed addresses.
	Redis   string   `json:"redis"`
	Cluster []string `json:"cluster,omitempty"`
	// Coordinator configures the child's Coordinator.
	Coordinator CoordinatorOptions `json:"coordinator"`
	// Config is the child's share of the clients.
	Config Config `json:"config"`
	// Timeout bounds the child's run.
	Timeout time.Duration `json:"timeout"`
	// Actions is the number of actions, for the pool size.
	Actions int `json:"actions"`
}

// RunChild is a child process's main: it connects, reports ready on out,
// waits for a line on in, runs its clients, reports every event and, at
// the end, done with its Redis counts.
func RunChild(spec Spec, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), spec.Timeout)
	defer cancel()
	var rdb redis.UniversalClient
	var counter *redisstats.Counter
	var err error
	if len(spec.Cluster) > 0 {
		rdb, counter, err = ConnectCluster(spec.Cluster, PoolSize(len(spec.Config.Clients), spec.Actions))
	} else {
		rdb, counter, err = Connect(spec.Redis, PoolSize(len(spec.Config.Clients), spec.Actions))
	}
	if err != nil {
		return err
	}
	defer rdb.Close()
	c, closeC, err := NewCoordinator(ctx, rdb, counter, spec.Coordinator)
	if err != nil {
		return err
	}
	defer closeC()

	w := &eventWriter{w: bufio.NewWriter(out)}
	w.emit(Event{Kind: KindReady, Process: spec.Config.Process})
	if _, err := bufio.NewReader(in).ReadString('\n'); err != nil {
		return fmt.Errorf("child %d: waiting for go: %w", spec.Config.Process, err)
	}
	before := counter.Snapshot()
	Run(ctx, Baton{C: c}, spec.Config, w.emit)
	counts := counter.Snapshot().Sub(before)
	w.emit(Event{Kind: KindDone, Process: spec.Config.Process, Counts: &counts})
	return w.err
}

// eventWriter writes events as JSON lines, flushing each so that the parent
// sees a process's state as it happens (the crash mode needs it).
type eventWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

func (e *eventWriter) emit(ev Event) {
	b, err := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		_, err = e.w.Write(append(b, '\n'))
	}
	if err == nil {
		err = e.w.Flush()
	}
	if err != nil && e.err == nil {
		e.err = err
	}
}

// Child is a running child process, seen from the parent.
type Child struct {
	// Process numbers the child.
	Process int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	ready   chan struct{}
	exited  chan struct{}
	err     error // set before exited closes
}

// StartChild starts the bench binary exe as a child with spec, feeding its
// events to col. Its stderr goes to the parent's stderr.
func StartChild(exe string, spec Spec, col *Collector) (*Child, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting child %d: %w", spec.Config.Process, err)
	}
	ch := &Child{Process: spec.Config.Process, cmd: cmd, stdin: stdin, ready: make(chan struct{}), exited: make(chan struct{})}
	go ch.read(stdout, col)
	return ch, nil
}

func (ch *Child) read(r io.Reader, col *Collector) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	readyOnce := sync.OnceFunc(func() { close(ch.ready) })
	var bad error
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			bad = fmt.Errorf("child %d: bad event line %q: %w", ch.Process, sc.Text(), err)
			continue
		}
		if ev.Kind == KindReady {
			readyOnce()
		}
		col.Add(ev)
	}
	err := ch.cmd.Wait()
	ch.err = errors.Join(err, bad)
	close(ch.exited)
}

// WaitReady waits until the child reported ready, exited or ctx ended.
func (ch *Child) WaitReady(ctx context.Context) error {
	select {
	case <-ch.ready:
		return nil
	case <-ch.exited:
		return fmt.Errorf("child %d exited before it was ready: %v", ch.Process, ch.err)
	case <-ctx.Done():
		return fmt.Errorf("child %d not ready: %w", ch.Process, ctx.Err())
	}
}

// Go tells the child to start its clients.
func (ch *Child) Go() error {
	_, err := io.WriteString(ch.stdin, "go\n")
	return err
}

// Kill sends SIGKILL.
func (ch *Child) Kill() error { return ch.cmd.Process.Kill() }

// Wait waits for the child to exit (or ctx to end, killing it) and returns
// its exit error.
func (ch *Child) Wait(ctx context.Context) error {
	select {
	case <-ch.exited:
	case <-ctx.Done():
		_ = ch.Kill()
		<-ch.exited
	}
	return ch.err
}

// Exited is closed when the child has exited.
func (ch *Child) Exited() <-chan struct{} { return ch.exited }

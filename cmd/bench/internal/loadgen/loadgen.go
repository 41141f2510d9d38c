// Package loadgen runs the bench's closed-loop clients against a limiter
// (Baton, or the hand-written polling baseline) and reports one event per
// step of each execution: submit, start, end (or fail). Events from several
// OS processes travel over pipes as JSON lines; a Collector assembles them
// into the executions the metrics package reads.
package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/cmd/bench/internal/workload"
	"github.com/batonhq/baton/coordinator"
)

// Event kinds.
const (
	KindSubmit = "submit" // the client calls Acquire
	KindStart  = "start"  // Acquire returned: admitted
	KindEnd    = "end"    // work done; Release is called next
	KindFail   = "fail"   // Acquire or Release failed
	KindReady  = "ready"  // a child process is connected and waits for "go"
	KindDone   = "done"   // a process finished all its clients
)

// Event is one step of one execution, or a process's ready/done signal.
type Event struct {
	// Kind is one of the Kind constants.
	Kind string `json:"k"`
	// Process is the bench process that reports it.
	Process int `json:"p"`
	// ID and Action name the execution (not for ready and done).
	ID     string `json:"id,omitempty"`
	Action string `json:"a,omitempty"`
	// T is the host wall clock in Unix nanoseconds.
	T int64 `json:"t,omitempty"`
	// Seq and Token are the lease's (start only).
	Seq   int64 `json:"seq,omitempty"`
	Token int64 `json:"tok,omitempty"`
	// Err is the failure (fail only).
	Err string `json:"err,omitempty"`
	// Counts are the process's client-side Redis counts (done only).
	Counts *redisstats.Counts `json:"counts,omitempty"`
}

// Grant is one admission by a Limiter.
type Grant struct {
	// Seq is the FIFO order of the request (0 if the limiter has none).
	Seq int64
	// Token is the admission order (0 if the limiter has none).
	Token int64
	// Release frees the slot.
	Release func(ctx context.Context) error
}

// Limiter admits executions of actions.
type Limiter interface {
	Acquire(ctx context.Context, action, id string) (Grant, error)
}

// Baton adapts a Coordinator to Limiter.
type Baton struct{ C *coordinator.Coordinator }

// Acquire calls EnqueueAndWait.
func (b Baton) Acquire(ctx context.Context, action, id string) (Grant, error) {
	l, err := b.C.EnqueueAndWait(ctx, action, id)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Seq: l.Seq(), Token: l.Token(), Release: l.Release}, nil
}

// Config is one process's share of a run.
type Config struct {
	// RunID makes execution IDs unique across runs on one Redis.
	RunID string
	// Process numbers this process.
	Process int
	// Clients are this process's clients.
	Clients []workload.Client
	// Work is how long each execution holds its slot.
	Work workload.Work
}

// ExecutionID names the n-th execution of a client.
func ExecutionID(runID string, client, n int) string {
	return fmt.Sprintf("%s-c%d-%d", runID, client, n)
}

// Run runs every client of cfg to completion or until ctx ends, calling emit
// (which must be safe for concurrent use) for every event.
func Run(ctx context.Context, lim Limiter, cfg Config, emit func(Event)) {
	var wg sync.WaitGroup
	for _, cl := range cfg.Clients {
		wg.Go(func() { runClient(ctx, lim, cfg, cl, emit) })
	}
	wg.Wait()
}

func runClient(ctx context.Context, lim Limiter, cfg Config, cl workload.Client, emit func(Event)) {
	r := rand.New(rand.NewPCG(uint64(cl.Index), uint64(time.Now().UnixNano())))
	for n := range cl.Count {
		if ctx.Err() != nil {
			return
		}
		ev := Event{Process: cfg.Process, ID: ExecutionID(cfg.RunID, cl.Index, n), Action: cl.Action}
		emit(with(ev, KindSubmit, nil))
		g, err := lim.Acquire(ctx, cl.Action, ev.ID)
		if err != nil {
			emit(with(ev, KindFail, err))
			continue
		}
		start := with(ev, KindStart, nil)
		start.Seq, start.Token = g.Seq, g.Token
		emit(start)
		sleep(ctx, cfg.Work.Sample(r))
		emit(with(ev, KindEnd, nil))
		// Release even when ctx ended: the slot must come back.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = g.Release(rctx)
		cancel()
		if err != nil {
			emit(with(ev, KindFail, fmt.Errorf("release: %w", err)))
		}
	}
}

func with(ev Event, kind string, err error) Event {
	ev.Kind, ev.T = kind, time.Now().UnixNano()
	if err != nil {
		ev.Err = err.Error()
	}
	return ev
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

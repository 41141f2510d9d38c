package loadgen

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/batonhq/baton/cmd/bench/internal/workload"
)

// fakeLimiter admits everything except IDs in fail, numbering grants.
type fakeLimiter struct {
	mu       sync.Mutex
	n        int64
	fail     map[string]bool
	released int
}

func (f *fakeLimiter) Acquire(_ context.Context, _, id string) (Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[id] {
		return Grant{}, errors.New("refused")
	}
	f.n++
	return Grant{Seq: f.n, Token: f.n, Release: func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.released++
		return nil
	}}, nil
}

func TestRunReportsEveryStep(t *testing.T) {
	lim := &fakeLimiter{fail: map[string]bool{ExecutionID("r", 1, 0): true}}
	col := NewCollector()
	cfg := Config{RunID: "r", Process: 3, Work: workload.Work{},
		Clients: []workload.Client{{Index: 0, Action: "p.a", Count: 3}, {Index: 1, Action: "p.b", Count: 2}}}
	Run(context.Background(), lim, cfg, col.Add)

	execs := col.Executions()
	if len(execs) != 5 {
		t.Fatalf("%d executions, want 5", len(execs))
	}
	finished := 0
	for _, e := range execs {
		if e.Process != 3 || e.Submit == 0 {
			t.Errorf("bad execution %+v", e)
		}
		if e.Finished() {
			finished++
			if e.Start < e.Submit || e.End < e.Start || e.Token == 0 {
				t.Errorf("out of order %+v", e)
			}
		} else if e.Err != "refused" {
			t.Errorf("unfinished without error: %+v", e)
		}
	}
	if finished != 4 || lim.released != 4 || col.Progress() != 5 {
		t.Errorf("finished %d released %d progress %d", finished, lim.released, col.Progress())
	}
	if got := col.Failures(); got["refused"] != 1 {
		t.Errorf("failures %v", got)
	}
	if len(col.Executions(3)) != 0 {
		t.Error("exclude did not drop process 3")
	}
}

func TestCollectorInFlight(t *testing.T) {
	col := NewCollector()
	col.Add(Event{Kind: KindSubmit, Process: 1, ID: "a", Action: "p.a", T: 1})
	col.Add(Event{Kind: KindSubmit, Process: 1, ID: "b", Action: "p.a", T: 2})
	col.Add(Event{Kind: KindStart, Process: 1, ID: "b", Action: "p.a", T: 3, Seq: 2, Token: 1})
	col.Add(Event{Kind: KindSubmit, Process: 1, ID: "c", Action: "p.a", T: 4})
	col.Add(Event{Kind: KindStart, Process: 1, ID: "c", Action: "p.a", T: 5})
	col.Add(Event{Kind: KindEnd, Process: 1, ID: "c", Action: "p.a", T: 6})
	col.Add(Event{Kind: KindSubmit, Process: 2, ID: "d", Action: "p.a", T: 4})
	holding, waiting := col.InFlight(1)
	if len(holding) != 1 || holding[0].ID != "b" || len(waiting) != 1 || waiting[0].ID != "a" {
		t.Errorf("holding %v waiting %v", holding, waiting)
	}
	col.Add(Event{Kind: KindDone, Process: 1})
	if !col.Done(1) || col.Done(2) {
		t.Error("done flags")
	}
}

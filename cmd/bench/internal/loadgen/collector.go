package loadgen

import (
	"slices"
	"strings"
	"sync"

	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
)

// Collector assembles events into executions. It is safe for concurrent use.
type Collector struct {
	mu     sync.Mutex
	execs  map[string]*metrics.Execution
	fails  map[string]int // release failures and the like, by message
	done   map[int]bool
	counts redisstats.Counts
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{execs: map[string]*metrics.Execution{}, fails: map[string]int{}, done: map[int]bool{}}
}

// Add records one event.
func (c *Collector) Add(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Kind {
	case KindDone:
		c.done[ev.Process] = true
		if ev.Counts != nil {
			c.counts = c.counts.Add(*ev.Counts)
		}
		return
	case KindReady:
		return
	}
	e := c.execs[ev.ID]
	if e == nil {
		e = &metrics.Execution{ID: ev.ID, Action: ev.Action, Process: ev.Process}
		c.execs[ev.ID] = e
	}
	switch ev.Kind {
	case KindSubmit:
		e.Submit = ev.T
	case KindStart:
		e.Start, e.Seq, e.Token = ev.T, ev.Seq, ev.Token
	case KindEnd:
		e.End = ev.T
	case KindFail:
		if e.Err == "" {
			e.Err = ev.Err
		}
		c.fails[firstLine(ev.Err)]++
	}
}

// Executions returns every execution seen, by ID order; exclude drops the
// executions of those processes.
func (c *Collector) Executions(exclude ...int) []metrics.Execution {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]metrics.Execution, 0, len(c.execs))
	for _, e := range c.execs {
		if !slices.Contains(exclude, e.Process) {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b metrics.Execution) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Progress counts executions that finished (ended or failed).
func (c *Collector) Progress() (finished int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.execs {
		if e.End != 0 || e.Err != "" {
			finished++
		}
	}
	return finished
}

// InFlight counts one process's executions that hold a slot (started, not
// ended) and that wait (submitted, not started, not failed), with their IDs.
func (c *Collector) InFlight(process int) (holding, waiting []metrics.Execution) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.execs {
		if e.Process != process || e.Err != "" {
			continue
		}
		switch {
		case e.Start != 0 && e.End == 0:
			holding = append(holding, *e)
		case e.Start == 0 && e.Submit != 0:
			waiting = append(waiting, *e)
		}
	}
	return holding, waiting
}

// Failures counts failure messages.
func (c *Collector) Failures() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.fails {
		out[k] = v
	}
	return out
}

// Counts sums the client-side Redis counts the processes reported when done.
func (c *Collector) Counts() redisstats.Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts.Add(redisstats.Counts{})
}

// Done reports whether a process reported that it finished.
func (c *Collector) Done(process int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done[process]
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Package workload describes the bench's standard workload: how many
// actions, what limit, how many executions, which client submits what from
// which process, and how long each execution works.
package workload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Work is how long an admitted execution holds its slot: a fixed duration or
// an exponential distribution with a mean.
type Work struct {
	// Exp selects the exponential distribution; otherwise every execution works Mean.
	Exp bool
	// Mean is the fixed duration, or the mean of the distribution.
	Mean time.Duration
}

// ParseWork reads "2ms" (fixed) or "exp:2ms" (exponential, mean 2ms).
func ParseWork(s string) (Work, error) {
	w := Work{}
	if rest, ok := strings.CutPrefix(s, "exp:"); ok {
		w.Exp, s = true, rest
	} else if rest, ok := strings.CutPrefix(s, "fixed:"); ok {
		s = rest
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return Work{}, fmt.Errorf("work %q: want a duration (2ms) or exp:<mean>: %w", s, err)
	}
	if d < 0 {
		return Work{}, fmt.Errorf("work %q: negative", s)
	}
	w.Mean = d
	return w, nil
}

// maxExpFactor caps an exponential sample, so that one unlucky draw cannot
// stretch a bounded run.
const maxExpFactor = 20

// Sample draws one work duration.
func (w Work) Sample(r *rand.Rand) time.Duration {
	if !w.Exp {
		return w.Mean
	}
	f := min(r.ExpFloat64(), maxExpFactor)
	return time.Duration(f * float64(w.Mean))
}

// String renders the form ParseWork reads.
func (w Work) String() string {
	if w.Exp {
		return "exp:" + w.Mean.String()
	}
	return w.Mean.String()
}

// MarshalText renders the work as in String, for the JSON report.
func (w Work) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText reads the form ParseWork reads.
func (w *Work) UnmarshalText(b []byte) error {
	v, err := ParseWork(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// Workload is the shape of one throughput run; the report prints it.
type Workload struct {
	// Actions is the number of distinct actions.
	Actions int `json:"actions"`
	// Limit is the concurrency limit of every action.
	Limit int `json:"limit"`
	// Executions is the number of executions per action.
	Executions int `json:"executions"`
	// Clients is the number of closed-loop submitters, spread round-robin over the actions.
	Clients int `json:"clients"`
	// Work is how long each execution holds its slot.
	Work Work `json:"work"`
	// Processes is the number of executor processes sharing Redis.
	Processes int `json:"processes"`
}

// Validate reports the first unusable field, by its flag name.
func (w Workload) Validate() error {
	switch {
	case w.Actions < 1:
		return errors.New("--actions must be >= 1")
	case w.Limit < 1:
		return errors.New("--limit must be >= 1")
	case w.Executions < 1:
		return errors.New("--executions must be >= 1")
	case w.Clients < w.Actions:
		return fmt.Errorf("--clients (%d) must be >= --actions (%d): every action needs a client", w.Clients, w.Actions)
	case w.Processes < 1:
		return errors.New("--processes must be >= 1")
	case w.Clients < w.Processes:
		return fmt.Errorf("--clients (%d) must be >= --processes (%d)", w.Clients, w.Processes)
	}
	return nil
}

// Planned is the total number of executions.
func (w Workload) Planned() int { return w.Actions * w.Executions }

// ActionRef names the i-th bench action.
func ActionRef(i int) string { return fmt.Sprintf("bench.a%d", i) }

// Refs lists every action of the workload.
func (w Workload) Refs() []string {
	out := make([]string, w.Actions)
	for i := range out {
		out[i] = ActionRef(i)
	}
	return out
}

// Client is one closed-loop submitter.
type Client struct {
	// Index numbers the client over the whole run.
	Index int `json:"index"`
	// Process is the executor process it runs in.
	Process int `json:"process"`
	// Action is the action ref it submits to.
	Action string `json:"action"`
	// Count is how many executions it submits, one after another.
	Count int `json:"count"`
}

// Plan spreads the clients round-robin over the actions (client i submits
// to action i mod Actions), splits each action's executions evenly among its
// clients, and spreads each action's clients over the processes (client i runs
// in process (i / Actions) mod Processes), so that with several processes
// every action has waiters in more than one of them.
func (w Workload) Plan() []Client {
	perAction := make([]int, w.Actions)
	for i := range w.Clients {
		perAction[i%w.Actions]++
	}
	out := make([]Client, w.Clients)
	for i := range out {
		a := i % w.Actions
		nth := i / w.Actions // this client's rank among its action's clients
		n := perAction[a]
		count := w.Executions / n
		if nth < w.Executions%n {
			count++
		}
		out[i] = Client{Index: i, Process: nth % w.Processes, Action: ActionRef(a), Count: count}
	}
	return out
}

// ClientsOf returns the clients of one process.
func (w Workload) ClientsOf(process int) []Client {
	var out []Client
	for _, c := range w.Plan() {
		if c.Process == process {
			out = append(out, c)
		}
	}
	return out
}

package coordinator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/batonhq/baton/scripts"
)

// ticks holds this process's timers for throttled queue heads. When a
// script finds the head of an action's queue waiting only for a rate token,
// it tells its caller when the token comes (the Wake of its reply) — one
// caller per token time, so one process holds the timer — and that process
// runs tick.lua then. Nothing polls while the head waits; the sweep index
// holds the same time as a backstop should this process stop first.
type ticks struct {
	mu      sync.Mutex
	stopped bool                  // Close began: no new timer, no new tick
	timers  map[string]*tickTimer // by action ref
	running sync.WaitGroup        // ticks in flight; Close waits for them
}

type tickTimer struct {
	at    time.Time
	timer *time.Timer
}

// schedule does what a script's reply asks: add the action to the sweep
// index at due (ms), and run tick.lua after wake.
func (c *Coordinator) schedule(ctx context.Context, ref string, due int64, wake time.Duration) {
	c.addDue(ctx, ref, due)
	if wake > 0 {
		c.armTick(ref, wake)
	}
}

// armTick runs tick.lua for ref after d, unless a timer of this process
// already runs it sooner.
func (c *Coordinator) armTick(ref string, d time.Duration) {
	at := time.Now().Add(d)
	c.ticks.mu.Lock()
	defer c.ticks.mu.Unlock()
	if c.ticks.stopped {
		return
	}
	if c.ticks.timers == nil {
		c.ticks.timers = map[string]*tickTimer{}
	}
	if t := c.ticks.timers[ref]; t != nil {
		if !t.at.After(at) {
			return
		}
		t.timer.Stop()
	}
	t := &tickTimer{at: at}
	t.timer = time.AfterFunc(d, func() { c.tick(ref, t) })
	c.ticks.timers[ref] = t
}

// tick runs tick.lua for ref: the throttled head's token has come.
func (c *Coordinator) tick(ref string, t *tickTimer) {
	c.ticks.mu.Lock()
	if c.ticks.timers[ref] == t {
		delete(c.ticks.timers, ref)
	}
	if c.ticks.stopped {
		c.ticks.mu.Unlock()
		return
	}
	c.ticks.running.Add(1) // under the mutex, before stopTicks can wait
	c.ticks.mu.Unlock()
	defer c.ticks.running.Done()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	r, err := scripts.Tick(ctx, c.run, c.keys.Action(ref), c.opts.AckTimeout)
	if err != nil {
		c.log.Warn("baton: admitting a throttled head; retrying", slog.String("action", ref), slog.Any("error", err))
		c.armTick(ref, tickRetry)
		return
	}
	c.schedule(ctx, ref, r.Due, r.Wake)
}

// tickRetry is how soon a tick that could not reach Redis is tried again
// (the sweep index holds the same time, for any sweeper to act on).
const tickRetry = time.Second

// stopTicks stops every tick timer and waits for the ticks in flight
// (Close): none runs after it returns.
func (c *Coordinator) stopTicks() {
	c.ticks.mu.Lock()
	c.ticks.stopped = true
	for ref, t := range c.ticks.timers {
		t.timer.Stop()
		delete(c.ticks.timers, ref)
	}
	c.ticks.mu.Unlock()
	c.ticks.running.Wait()
}

package scripts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds the script calls sent in one pipeline.
const maxBatch = 128

// Batcher is a Runner that pipelines concurrent calls. Up to lanes
// pipelines are in flight at once; calls made while they are all busy wait in a queue and leave together in the next pipeline. At low load
// a call leaves at once, alone (one round trip, as without the batcher);
// under load Redis reads and answers many calls with one system call each
// way, which is most of the cost of a small script.
//
// Once a call has been handed to a lane it runs even if its caller's context
// ends, and the caller waits for the reply: a script that ran must not be
// mistaken for one that did not.
type Batcher struct {
	rdb   redis.UniversalClient
	dur   Durability
	calls chan *scriptCall
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	mode  atomic.Int32 // modeUnknown, modeFunctions or modeEval
}

const (
	modeUnknown int32 = iota
	modeFunctions
	modeEval
)

type scriptCall struct {
	s    *Script
	keys []string
	args []any
	v    any
	err  error
	done chan struct{}
}

// Durability makes every state-changing script call wait for replicas
// before it reports success: WAIT Replicas Timeout follows the calls in the
// same pipeline, on the same connection (in a cluster, one pipeline per
// master), so it costs no extra round trip. A call whose WAIT counted fewer
// replicas fails with ErrNotReplicated, though it ran on the master.
// Read-only scripts (stats, state) and claim_due (the cross-slot sweep
// index, which may be stale anyway) do not wait. The zero value waits for
// nothing.
type Durability struct {
	// Replicas is how many replicas must acknowledge the writes (0: none).
	Replicas int
	// Timeout bounds the WAIT; it must be below the client's ReadTimeout.
	Timeout time.Duration
}

// ErrNotReplicated: a state-changing call ran on the master, but fewer
// replicas than Durability.Replicas acknowledged it within the timeout, so
// a failover may still lose it.
var ErrNotReplicated = errors.New("baton: not replicated")

// NewBatcher starts a Batcher on rdb with lanes pipelines in flight at most
// and the given durability. Close stops it.
func NewBatcher(rdb redis.UniversalClient, lanes int, dur Durability) *Batcher {
	b := &Batcher{rdb: rdb, dur: dur, calls: make(chan *scriptCall, maxBatch), stop: make(chan struct{})}
	for range lanes {
		b.wg.Add(1)
		go b.lane()
	}
	return b
}

// RunScript implements scripts.Runner. After close it runs calls directly
// (still waiting for replicas when Durability asks for it). A call that ran
// but was not replicated returns its reply with ErrNotReplicated.
func (b *Batcher) RunScript(ctx context.Context, s *Script, keys []string, args []any) (any, error) {
	c := &scriptCall{s: s, keys: keys, args: args, done: make(chan struct{})}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
		if b.durable([]*scriptCall{c}) {
			b.sendDurable(ctx, []*scriptCall{c}, b.mode.Load() == modeFunctions)
			return c.v, c.err
		}
		return s.Run(ctx, b.rdb, keys, args...)
	}
	<-c.done
	return c.v, c.err
}

// Close stops the lanes; later calls run directly, one round trip each.
func (b *Batcher) Close() {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
	for { // calls queued as the lanes stopped
		select {
		case c := <-b.calls:
			b.send([]*scriptCall{c})
		default:
			return
		}
	}
}

func (b *Batcher) lane() {
	defer b.wg.Done()
	batch := make([]*scriptCall, 0, maxBatch)
	for {
		select {
		case c := <-b.calls:
			batch = append(batch[:0], c)
		case <-b.stop:
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		b.send(batch)
	}
}

// send runs one batch, with FCALL where Redis has Functions, else EVALSHA.
func (b *Batcher) send(batch []*scriptCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if b.mode.Load() == modeUnknown {
		b.probe(ctx)
	}
	if b.durable(batch) {
		b.sendDurable(ctx, batch, b.mode.Load() == modeFunctions)
		for _, c := range batch {
			close(c.done)
		}
		return
	}
	runPipeline(ctx, b.rdb, batch, b.mode.Load() == modeFunctions)
	if b.mode.Load() == modeFunctions && missingFunction(batch) {
		// A node lost the library (restart, flush, a new master): load it and
		// run again the calls that did not run.
		if err := LoadLibrary(ctx, b.rdb); err != nil {
			b.mode.Store(modeEval)
		}
		var again []*scriptCall
		for _, c := range batch {
			if c.err != nil && isMissingFunction(c.err) {
				again = append(again, c)
			}
		}
		runPipeline(ctx, b.rdb, again, b.mode.Load() == modeFunctions)
	}
	for _, c := range batch {
		close(c.done)
	}
}

// Probe loads the function library unless that was tried already: Redis
// without Functions (miniredis, Redis < 7, or a user without the
// permission) gets EVAL scripts from then on. The first call probes by
// itself; calling Probe ahead moves that round trip out of the first call.
func (b *Batcher) Probe(ctx context.Context) {
	if b.mode.Load() == modeUnknown {
		b.probe(ctx)
	}
}

func (b *Batcher) probe(ctx context.Context) {
	if err := LoadLibrary(ctx, b.rdb); err != nil {
		var re redis.Error
		if errors.As(err, &re) { // Redis answered no; a network error is tried again later
			b.mode.CompareAndSwap(modeUnknown, modeEval)
		}
		return
	}
	b.mode.CompareAndSwap(modeUnknown, modeFunctions)
}

// LoadLibrary loads the function library (on every master of a cluster).
func LoadLibrary(ctx context.Context, rdb redis.UniversalClient) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.FunctionLoadReplace(ctx, Library).Err()
		})
	}
	return rdb.FunctionLoadReplace(ctx, Library).Err()
}

func isMissingFunction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

func missingFunction(batch []*scriptCall) bool {
	for _, c := range batch {
		if isMissingFunction(c.err) {
			return true
		}
	}
	return false
}

func runPipeline(ctx context.Context, rdb redis.UniversalClient, batch []*scriptCall, functions bool) {
	if len(batch) == 0 {
		return
	}
	if len(batch) == 1 && (!functions || batch[0].s.fn == "") {
		c := batch[0]
		c.v, c.err = c.s.Run(ctx, rdb, c.keys, c.args...)
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			if functions && c.s.fn != "" {
				cmds[i] = p.FCall(ctx, c.s.fn, c.keys, c.args...)
			} else {
				cmds[i] = c.s.s.EvalSha(ctx, p, c.keys, c.args...)
			}
		}
		return nil
	})
	for i, c := range batch {
		c.v, c.err = cmds[i].Result()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			c.v, c.err = c.s.Run(ctx, rdb, c.keys, c.args...)
		}
	}
}

// durable reports whether the batch must wait for replicas.
func (b *Batcher) durable(batch []*scriptCall) bool {
	if b.dur.Replicas <= 0 {
		return false
	}
	for _, c := range batch {
		if c.s.writes {
			return true
		}
	}
	return false
}

// maxRouteAttempts bounds how often a durable call is re-routed after a
// cluster redirection or a node that cannot be reached (a failover).
const maxRouteAttempts = 8

// sendDurable runs the batch followed by WAIT on each connection it used:
// on a cluster, one pipeline per master (WAIT counts the replicas of the
// node it runs on), re-routing calls that met a redirection or a dead node;
// then loads the function library where it was missing and runs those calls
// again.
func (b *Batcher) sendDurable(ctx context.Context, batch []*scriptCall, functions bool) {
	cc, isCluster := b.rdb.(*redis.ClusterClient)
	todo := batch
	for attempt := 0; len(todo) > 0; attempt++ {
		if !isCluster {
			runDurable(ctx, b.rdb, todo, functions, b.dur)
		} else {
			groups := map[*redis.Client][]*scriptCall{}
			for _, c := range todo {
				node, err := cc.MasterForKey(ctx, c.keys[0])
				if err != nil {
					c.v, c.err = nil, err
					continue
				}
				groups[node] = append(groups[node], c)
			}
			var wg sync.WaitGroup
			for node, calls := range groups {
				wg.Add(1)
				go func() {
					defer wg.Done()
					runDurable(ctx, node, calls, functions, b.dur)
				}()
			}
			wg.Wait()
		}
		var again []*scriptCall
		missing := false
		for _, c := range todo {
			switch {
			case functions && isMissingFunction(c.err):
				missing = true
				again = append(again, c)
			case isCluster && rerouted(c.err):
				again = append(again, c)
			}
		}
		if len(again) == 0 || attempt+1 >= maxRouteAttempts || ctx.Err() != nil {
			return
		}
		if missing {
			// A node lost the library (restart, flush, a new master): load it.
			if err := LoadLibrary(ctx, b.rdb); err != nil {
				var re redis.Error
				if errors.As(err, &re) {
					b.mode.Store(modeEval)
					functions = false
				}
			}
		}
		if isCluster {
			cc.ReloadState(ctx)
			t := time.NewTimer(backoff(attempt))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		todo = again
	}
}

// backoff is the pause before the attempt+1st routing of a durable call.
func backoff(attempt int) time.Duration {
	return min(50*time.Millisecond<<min(attempt, 5), time.Second)
}

// rerouted reports an error after which a call did not run on the node
// that holds its slot now, or may not have: a redirection, a cluster
// without a master for the slot, or a node that cannot be reached. Scripts
// are idempotent per execution, so running one again is safe.
func rerouted(err error) bool {
	if err == nil || errors.Is(err, ErrNotReplicated) {
		return false
	}
	for _, p := range []string{"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	var re redis.Error
	return !errors.As(err, &re) // a network error, not Redis's answer
}

// runDurable sends calls and WAIT in one pipeline on rdb (one node or a
// plain client), then again by EVAL those that met NOSCRIPT. A write that ran
// but whose WAIT counted too few replicas gets ErrNotReplicated, keeping its
// reply.
func runDurable(ctx context.Context, rdb redis.Cmdable, batch []*scriptCall, functions bool, dur Durability) {
	noscript := runWithWait(ctx, rdb, batch, dur, func(p redis.Pipeliner, c *scriptCall) *redis.Cmd {
		if functions && c.s.fn != "" {
			return p.FCall(ctx, c.s.fn, c.keys, c.args...)
		}
		return c.s.s.EvalSha(ctx, p, c.keys, c.args...)
	})
	if len(noscript) > 0 {
		runWithWait(ctx, rdb, noscript, dur, func(p redis.Pipeliner, c *scriptCall) *redis.Cmd {
			return c.s.s.Eval(ctx, p, c.keys, c.args...)
		})
	}
}

func runWithWait(ctx context.Context, rdb redis.Cmdable, batch []*scriptCall, dur Durability,
	queue func(redis.Pipeliner, *scriptCall) *redis.Cmd) (noscript []*scriptCall) {
	cmds := make([]*redis.Cmd, len(batch))
	var wait *redis.Cmd
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = queue(p, c)
		}
		wait = p.Do(ctx, "WAIT", dur.Replicas, dur.Timeout.Milliseconds())
		return nil
	})
	got, werr := wait.Int64()
	for i, c := range batch {
		c.v, c.err = cmds[i].Result()
		switch {
		case c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT"):
			noscript = append(noscript, c)
		case c.err != nil || !c.s.writes:
		case werr != nil:
			c.err = fmt.Errorf("%w: WAIT %d: %v", ErrNotReplicated, dur.Replicas, werr)
		case got < int64(dur.Replicas):
			c.err = fmt.Errorf("%w: %d of %d replicas acknowledged within %v", ErrNotReplicated, got, dur.Replicas, dur.Timeout)
		}
	}
	return noscript
}

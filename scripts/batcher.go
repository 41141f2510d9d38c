package scripts

import (
	"context"
	"errors"
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

// NewBatcher starts a Batcher on rdb with lanes pipelines in flight at most.
// Close stops it.
func NewBatcher(rdb redis.UniversalClient, lanes int) *Batcher {
	b := &Batcher{rdb: rdb, calls: make(chan *scriptCall, maxBatch), stop: make(chan struct{})}
	for range lanes {
		b.wg.Add(1)
		go b.lane()
	}
	return b
}

// RunScript implements scripts.Runner. After close it runs calls directly.
func (b *Batcher) RunScript(ctx context.Context, s *Script, keys []string, args []any) (any, error) {
	c := &scriptCall{s: s, keys: keys, args: args, done: make(chan struct{})}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
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

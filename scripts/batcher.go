package scripts

import (
	"context"
	"sync"
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
}

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

// send runs one batch: one call alone (EVALSHA, EVAL on NOSCRIPT), several
// in one pipeline of EVALSHA, re-running those that met NOSCRIPT.
func (b *Batcher) send(batch []*scriptCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runPipeline(ctx, b.rdb, batch)
	for _, c := range batch {
		close(c.done)
	}
}

func runPipeline(ctx context.Context, rdb redis.UniversalClient, batch []*scriptCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.v, c.err = c.s.Run(ctx, rdb, c.keys, c.args...)
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = c.s.EvalSha(ctx, p, c.keys, c.args...)
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

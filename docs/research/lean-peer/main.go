// lean is the leanest strict-FIFO limiter of Baton's family we could think of, as a floor for
// Redis server CPU per admission:
//
//	lean_enqueue  KEYS count, queue  ARGV limit, id
//	    queue empty and count < limit: INCR count, return 1 (admitted)
//	    else RPUSH queue id, return 0 (queued)
//	lean_release  KEYS count, queue  ARGV grant-key prefix
//	    LPOP queue; an id came out: RPUSH prefix..id "g", PEXPIRE 60000 (the slot passes to
//	    it, count unchanged); else DECR count
//
// A queued caller BLPOPs its own grant key {k}:g:<id>. All keys of one limiter share the hash
// tag {lean:action-N}. Invariant: queue non-empty => count == limit, so an empty queue is the
// only case in which a newcomer may take a slot, and waiters get slots in RPUSH (arrival) order.
// No expiry of holders, no crash recovery, no fairness beyond FIFO: a floor, not a product.
//
// Variants (environment):
//
//	LEAN_PIPELINE=1  script calls go through a batcher: LEAN_PIPE_LANES (4) goroutines, each
//	                 with its own connection, take a call from a shared channel, add whatever
//	                 else is waiting (up to LEAN_PIPE_MAX, 64) and send it all as one pipeline.
//	LEAN_EVAL=1      EVALSHA of the same script bodies (SCRIPT LOAD at start) instead of FCALL.
//
// A summary (admissions, how many were queued, batch sizes) goes to stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"fifobench/harness/fifolimit"
)

const enqueueBody = `
if redis.call('LLEN', KEYS[2]) == 0 and tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('INCR', KEYS[1])
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 0
`

const releaseBody = `
local id = redis.call('LPOP', KEYS[2])
if id then
  local g = ARGV[1] .. id
  redis.call('RPUSH', g, 'g')
  redis.call('PEXPIRE', g, 60000)
  return 1
end
redis.call('DECR', KEYS[1])
return 0
`

const library = "#!lua name=fifobench_lean\n" +
	"redis.register_function('lean_enqueue', function(KEYS, ARGV)\n" + enqueueBody + "end)\n" +
	"redis.register_function('lean_release', function(KEYS, ARGV)\n" + releaseBody + "end)\n"

type keyset struct {
	kv          []string // count, queue
	grantPrefix string
}

// a script call: fn is the function name (FCALL) or the script's SHA1 (EVALSHA)
type call struct {
	fn   string
	keys []string
	args []interface{}
	res  int64
	err  error
	done chan struct{}
}

type lean struct {
	rdb      *redis.Client
	limit    string
	keys     []keyset
	eval     bool
	enqueue  string // function name or SHA1
	release  string
	ch       chan *call // nil unless pipelined
	seq      atomic.Int64
	admitted atomic.Int64
	queued   atomic.Int64
	batches  atomic.Int64
	batched  atomic.Int64
	maxBatch atomic.Int64
}

func (l *lean) cmd(ctx context.Context, c redis.Cmdable, fn string, keys []string, args ...interface{}) *redis.Cmd {
	if l.eval {
		return c.EvalSha(ctx, fn, keys, args...)
	}
	return c.FCall(ctx, fn, keys, args...)
}

// do runs one script call, directly or through the batcher. A batched call is always waited
// for (it runs with its lane's own context), so a caller never abandons a call that may still
// change the limiter's state.
func (l *lean) do(ctx context.Context, fn string, keys []string, args ...interface{}) (int64, error) {
	if l.ch == nil {
		return l.cmd(ctx, l.rdb, fn, keys, args...).Int64()
	}
	c := &call{fn: fn, keys: keys, args: args, done: make(chan struct{})}
	l.ch <- c
	<-c.done
	return c.res, c.err
}

func (l *lean) lane(conn *redis.Conn, max int) {
	ctx := context.Background()
	batch := make([]*call, 0, max)
	cmds := make([]*redis.Cmd, 0, max)
	for c := range l.ch {
		batch = append(batch[:0], c)
	drain:
		for len(batch) < max {
			select {
			case c2, ok := <-l.ch:
				if !ok {
					break drain
				}
				batch = append(batch, c2)
			default:
				break drain
			}
		}
		pipe := conn.Pipeline()
		cmds = cmds[:0]
		for _, c := range batch {
			cmds = append(cmds, l.cmd(ctx, pipe, c.fn, c.keys, c.args...))
		}
		_, _ = pipe.Exec(ctx)  // per-command errors are read below
		n := int64(len(batch)) // statistics first, so that they are complete once the callers return
		l.batches.Add(1)
		l.batched.Add(n)
		for m := l.maxBatch.Load(); n > m && !l.maxBatch.CompareAndSwap(m, n); m = l.maxBatch.Load() {
		}
		for i, c := range batch {
			c.res, c.err = cmds[i].Int64()
			close(c.done)
		}
	}
}

func (l *lean) Acquire(ctx context.Context, k int) (func(context.Context) error, error) {
	return l.acquire(ctx, k, strconv.FormatInt(l.seq.Add(1), 36))
}

func (l *lean) acquire(ctx context.Context, k int, id string) (func(context.Context) error, error) {
	ks := &l.keys[k]
	r, err := l.do(ctx, l.enqueue, ks.kv, l.limit, id)
	if err != nil {
		return nil, err
	}
	if r == 0 {
		l.queued.Add(1)
		// timeout 0: block until granted; the client has ContextTimeoutEnabled, so the
		// harness deadline (ctx) still ends the wait
		if err := l.rdb.BLPop(ctx, 0, ks.grantPrefix+id).Err(); err != nil {
			l.abandon(ks, id)
			return nil, err
		}
	}
	l.admitted.Add(1)
	return func(ctx context.Context) error {
		_, err := l.do(ctx, l.release, ks.kv, ks.grantPrefix)
		return err
	}, nil
}

// abandon undoes a wait that ended without a grant (deadline or error): take the id out of the
// queue; if it is no longer there, the slot was already passed to it, so drop the grant and
// pass the slot on. Off the measured path (only at the deadline).
func (l *lean) abandon(ks *keyset, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, err := l.rdb.LRem(ctx, ks.kv[1], 1, id).Result()
	if err != nil || n == 1 {
		return
	}
	l.rdb.Del(ctx, ks.grantPrefix+id)
	l.do(ctx, l.release, ks.kv, ks.grantPrefix)
}

func envOn(name string) bool {
	v := os.Getenv(name)
	return v != "" && v != "0" && v != "false"
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "%s: want a positive integer, got %q\n", name, v)
			os.Exit(1)
		}
		return n
	}
	return def
}

func main() {
	pipelined, eval := envOn("LEAN_PIPELINE"), envOn("LEAN_EVAL")
	lanes, maxBatch := envInt("LEAN_PIPE_LANES", 4), envInt("LEAN_PIPE_MAX", 64)
	var l *lean
	fifolimit.Main("lean", func(ctx context.Context, p fifolimit.Params) (fifolimit.Exec, func(), error) {
		rdb := redis.NewClient(&redis.Options{
			Addr:                  p.RedisAddr,
			DB:                    p.RedisDB,
			PoolSize:              p.Clients + 16,
			ContextTimeoutEnabled: true, // so that the deadline ends a BLPOP with timeout 0
		})
		fail := func(err error) (fifolimit.Exec, func(), error) { rdb.Close(); return nil, nil, err }
		l = &lean{rdb: rdb, limit: strconv.Itoa(p.Limit), eval: eval}
		for k := 0; k < p.Actions; k++ {
			tag := "{lean:" + fifolimit.KeyName(k) + "}"
			l.keys = append(l.keys, keyset{kv: []string{tag + ":c", tag + ":q"}, grantPrefix: tag + ":g:"})
		}
		if eval {
			var err error
			if l.enqueue, err = rdb.ScriptLoad(ctx, enqueueBody).Result(); err != nil {
				return fail(err)
			}
			if l.release, err = rdb.ScriptLoad(ctx, releaseBody).Result(); err != nil {
				return fail(err)
			}
		} else {
			if err := rdb.FunctionLoadReplace(ctx, library).Err(); err != nil {
				return fail(err)
			}
			l.enqueue, l.release = "lean_enqueue", "lean_release"
		}
		// open (and SELECT) the connections before the clock starts, as baton/main.go does
		var wg sync.WaitGroup
		errs := make(chan error, p.Clients+lanes)
		for i := 0; i < p.Clients; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- rdb.Ping(ctx).Err() }()
		}
		var conns []*redis.Conn
		if pipelined {
			l.ch = make(chan *call, p.Clients)
			for i := 0; i < lanes; i++ {
				conn := rdb.Conn()
				conns = append(conns, conn)
				wg.Add(1)
				go func() { defer wg.Done(); errs <- conn.Ping(ctx).Err() }()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return fail(err)
			}
		}
		for _, c := range conns {
			go l.lane(c, maxBatch)
		}
		cleanup := func() {
			mode := "fcall"
			if eval {
				mode = "evalsha"
			}
			if pipelined {
				mode += fmt.Sprintf(", pipelined: %d lanes, max batch %d", lanes, maxBatch)
			}
			fmt.Fprintf(os.Stderr, "lean (%s): %d admitted, %d of them queued first\n", mode, l.admitted.Load(), l.queued.Load())
			if pipelined {
				close(l.ch) // every client has returned, so nothing sends any more
				if b := l.batches.Load(); b > 0 {
					fmt.Fprintf(os.Stderr, "lean: %d script calls in %d pipelines, mean %.2f, max %d per pipeline\n",
						l.batched.Load(), b, float64(l.batched.Load())/float64(b), l.maxBatch.Load())
				}
				for _, c := range conns {
					c.Close()
				}
			}
			rdb.Close()
		}
		if path := os.Getenv("LEAN_IDS_FILE"); path != "" {
			return l.tracedExec(p, path), cleanup, nil
		}
		return fifolimit.LimiterExec(p, l), cleanup, nil
	})
}

// tracedExec is fifolimit.LimiterExec plus a record of which id each attempt used (diagnostics
// only, LEAN_IDS_FILE=path): lines "id,key,submit_ns,start_ns", written when the run ends, so
// that a MONITOR capture (server order of the script calls) can be matched to the records.
func (l *lean) tracedExec(p fifolimit.Params, path string) fifolimit.Exec {
	var mu sync.Mutex
	var lines []string
	var once sync.Once
	var pending atomic.Int64
	write := func() {
		mu.Lock()
		defer mu.Unlock()
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "LEAN_IDS_FILE:", err)
			return
		}
		defer f.Close()
		fmt.Fprintln(f, "id,key,submit_ns,start_ns")
		for _, s := range lines {
			fmt.Fprintln(f, s)
		}
	}
	planned := int64(p.Planned())
	if p.Warmup > 0 {
		planned += int64(p.Actions * p.Warmup)
	}
	return func(ctx context.Context, k int, rec *fifolimit.Record, now func() int64) error {
		id := strconv.FormatInt(l.seq.Add(1), 36)
		release, err := l.acquire(ctx, k, id)
		if err == nil {
			rec.Start = now()
		}
		mu.Lock()
		lines = append(lines, fmt.Sprintf("%s,%d,%d,%d", id, k, rec.Submit, rec.Start))
		mu.Unlock()
		if err != nil {
			return err
		}
		fifolimit.Sleep(p.Work)
		rec.End = now()
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = release(rctx)
		if pending.Add(1) == planned {
			once.Do(write)
		}
		return err
	}
}

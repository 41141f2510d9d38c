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
//	LEAN_LEASE=1     the lease variant (lease_enqueue, lease_release below): leases, fencing
//	                 tokens and the skipping of dead processes' waiters, the least Baton promises.
//	LEAN_FULL=1      the full variant (full_enqueue, full_release below): the lease variant plus
//	                 what every Baton call must do (clock, policy version, idempotency, fence
//	                 check, a statistics counter).
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

// The lease variant (LEAN_LEASE=1) adds the least a limiter needs so that a crashed holder's slot
// comes back and a dead process's waiters are skipped: each holder is a member of a running ZSET
// scored by its lease deadline (Redis clock), counted with ZCARD; each grant carries a fencing
// token; each waiter's owner is recorded, and a release skips waiters whose owner's liveness
// deadline (owners ZSET, renewed by the process off the admission path) has passed. A release of
// an execution that holds no slot changes nothing. No reclaim of expired leases runs here (a
// sweeper would, off the path), no idempotent retry of an enqueue, no statistics, no policies.
//
//	lease_enqueue  KEYS running, queue, waiting, meta, owners  ARGV limit, id, owner, lease ms
//	lease_release  KEYS running, queue, waiting, meta, owners  ARGV grant-key prefix, id, ack ms
const leaseEnqueueBody = `
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  local t = redis.call('TIME')
  local fence = redis.call('HINCRBY', KEYS[4], 'fence', 1)
  redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[4]), ARGV[2])
  return fence
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 0
`

const leaseReleaseBody = `
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then
  return -1
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
while true do
  local id = redis.call('LPOP', KEYS[2])
  if not id then
    return 0
  end
  local owner = redis.call('HGET', KEYS[3], id)
  redis.call('HDEL', KEYS[3], id)
  if tonumber(redis.call('ZSCORE', KEYS[5], owner) or '0') > now then
    local fence = redis.call('HINCRBY', KEYS[4], 'fence', 1)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    local g = ARGV[1] .. id
    redis.call('RPUSH', g, fence)
    redis.call('PEXPIRE', g, 60000)
    return 1
  end
end
`

// The full variant (LEAN_FULL=1) adds, to the lease variant, what Baton's admission path cannot
// drop in any redesign: the Redis clock on every call, the action's policy version checked (and
// adopted when the caller's is newer) on every call, an idempotent enqueue (an execution already
// waiting or holding is found, not added twice), the release checked against the fencing token,
// and one statistics counter per call. Waiting and holding executions share one hash (execs:
// id -> "w:<seq>:<owner>" or "h:<fence>:<owner>"). Still no wait-time histogram, no rates or
// quotas, no reclaim on the path.
//
//	full_enqueue  KEYS running, queue, execs, meta, owners  ARGV limit, id, owner, lease ms, policy version
//	full_release  KEYS running, queue, execs, meta, owners  ARGV grant-key prefix, id, ack ms, fence, policy version
const fullPrelude = `
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[4], 'state')
local version = tonumber(ARGV[5])
local v, l = string.match(state or '', '^(%d+),(-?%d+)$')
if not v or tonumber(v) < version then
  redis.call('HSET', KEYS[4], 'state', ARGV[5] .. ',' .. ARGV[1])
else
  limit = tonumber(l)
end
`

const fullEnqueueBody = fullPrelude + `
if redis.call('HGET', KEYS[3], ARGV[2]) then
  return -2
end
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) < limit then
  local fence = redis.call('HINCRBY', KEYS[4], 'fence', 1)
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[2], 'h:' .. fence .. ':' .. ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'admitted', 1)
  return fence
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], string.format('w:%d:%s', t[1] * 1000000 + t[2], ARGV[3]))
redis.call('HINCRBY', KEYS[4], 'enqueued', 1)
return 0
`

const fullReleaseBody = `
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[4], 'state')
local v = string.match(state or '', '^(%d+),')
if not v or tonumber(v) < tonumber(ARGV[5]) then
  return redis.error_reply('lean: the release carries a newer policy; not in this prototype')
end
local e = redis.call('HGET', KEYS[3], ARGV[2])
if not e or string.match(e, '^h:(%d+):') ~= ARGV[4] then
  return -1
end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HINCRBY', KEYS[4], 'completed', 1)
while true do
  local id = redis.call('LPOP', KEYS[2])
  if not id then
    return 0
  end
  local owner = string.match(redis.call('HGET', KEYS[3], id) or '', '^w:%d+:(.*)$')
  if owner and tonumber(redis.call('ZSCORE', KEYS[5], owner) or '0') > now then
    local fence = redis.call('HINCRBY', KEYS[4], 'fence', 1)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    redis.call('HSET', KEYS[3], id, 'h:' .. fence .. ':' .. owner)
    local g = ARGV[1] .. id
    redis.call('RPUSH', g, fence)
    redis.call('PEXPIRE', g, 60000)
    return 1
  end
  redis.call('HDEL', KEYS[3], id)
end
`

const library = "#!lua name=fifobench_lean\n" +
	"redis.register_function('lean_enqueue', function(KEYS, ARGV)\n" + enqueueBody + "end)\n" +
	"redis.register_function('lean_release', function(KEYS, ARGV)\n" + releaseBody + "end)\n" +
	"redis.register_function('lease_enqueue', function(KEYS, ARGV)\n" + leaseEnqueueBody + "end)\n" +
	"redis.register_function('lease_release', function(KEYS, ARGV)\n" + leaseReleaseBody + "end)\n" +
	"redis.register_function('full_enqueue', function(KEYS, ARGV)\n" + fullEnqueueBody + "end)\n" +
	"redis.register_function('full_release', function(KEYS, ARGV)\n" + fullReleaseBody + "end)\n"

type keyset struct {
	kv          []string // count, queue; with leases: running, queue, waiting, meta, owners
	grantPrefix string
}

// The lease variant's owner (this process), lease and acknowledgement times.
const (
	leaseOwner    = "p1"
	leaseMS       = "30000"
	ackMS         = "5000"
	policyVersion = "1" // the full variant's: the same on every call, so adopted once
)

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
	leases   bool
	full     bool   // the full variant (implies leases)
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
	var r int64
	var err error
	if l.full {
		r, err = l.do(ctx, l.enqueue, ks.kv, l.limit, id, leaseOwner, leaseMS, policyVersion)
	} else if l.leases {
		r, err = l.do(ctx, l.enqueue, ks.kv, l.limit, id, leaseOwner, leaseMS)
	} else {
		r, err = l.do(ctx, l.enqueue, ks.kv, l.limit, id)
	}
	if err != nil {
		return nil, err
	}
	if r < 0 {
		return nil, fmt.Errorf("lean: enqueue of %s: already there", id)
	}
	fence := r
	if r == 0 {
		l.queued.Add(1)
		// timeout 0: block until granted; the client has ContextTimeoutEnabled, so the
		// harness deadline (ctx) still ends the wait
		v, err := l.rdb.BLPop(ctx, 0, ks.grantPrefix+id).Result()
		if err != nil {
			l.abandon(ks, id)
			return nil, err
		}
		if l.full {
			fence, _ = strconv.ParseInt(v[1], 10, 64)
		}
	}
	l.admitted.Add(1)
	return func(ctx context.Context) error {
		if l.full {
			r, err := l.do(ctx, l.release, ks.kv, ks.grantPrefix, id, ackMS, strconv.FormatInt(fence, 10), policyVersion)
			if err == nil && r < 0 {
				err = fmt.Errorf("lean: release of %s: it held no slot", id)
			}
			return err
		}
		if l.leases {
			r, err := l.do(ctx, l.release, ks.kv, ks.grantPrefix, id, ackMS)
			if err == nil && r < 0 {
				err = fmt.Errorf("lean: release of %s: it held no slot", id)
			}
			return err
		}
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
	if l.full {
		fence, _ := l.rdb.LPop(ctx, ks.grantPrefix+id).Result()
		l.do(ctx, l.release, ks.kv, ks.grantPrefix, id, ackMS, fence, policyVersion)
		return
	}
	l.rdb.Del(ctx, ks.grantPrefix+id)
	if l.leases {
		l.do(ctx, l.release, ks.kv, ks.grantPrefix, id, ackMS)
		return
	}
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
	pipelined, eval, leases, full := envOn("LEAN_PIPELINE"), envOn("LEAN_EVAL"), envOn("LEAN_LEASE"), envOn("LEAN_FULL")
	leases = leases || full
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
		l = &lean{rdb: rdb, limit: strconv.Itoa(p.Limit), eval: eval, leases: leases, full: full}
		for k := 0; k < p.Actions; k++ {
			tag := "{lean:" + fifolimit.KeyName(k) + "}"
			kv := []string{tag + ":c", tag + ":q"}
			if leases {
				kv = []string{tag + ":r", tag + ":q", tag + ":w", tag + ":m", tag + ":o"}
			}
			l.keys = append(l.keys, keyset{kv: kv, grantPrefix: tag + ":g:"})
		}
		if leases {
			// The process's liveness, renewed off the admission path (every 10 s of a 30 s deadline).
			renew := func() error {
				t, err := rdb.Time(ctx).Result()
				if err != nil {
					return err
				}
				for _, ks := range l.keys {
					if err := rdb.ZAdd(ctx, ks.kv[4], redis.Z{Score: float64(t.UnixMilli() + 30000), Member: leaseOwner}).Err(); err != nil {
						return err
					}
				}
				return nil
			}
			if err := renew(); err != nil {
				return fail(err)
			}
			go func() {
				for range time.Tick(10 * time.Second) {
					if renew() != nil {
						return
					}
				}
			}()
		}
		if eval {
			var err error
			eb, rb := enqueueBody, releaseBody
			if full {
				eb, rb = fullEnqueueBody, fullReleaseBody
			} else if leases {
				eb, rb = leaseEnqueueBody, leaseReleaseBody
			}
			if l.enqueue, err = rdb.ScriptLoad(ctx, eb).Result(); err != nil {
				return fail(err)
			}
			if l.release, err = rdb.ScriptLoad(ctx, rb).Result(); err != nil {
				return fail(err)
			}
		} else {
			if err := rdb.FunctionLoadReplace(ctx, library).Err(); err != nil {
				return fail(err)
			}
			l.enqueue, l.release = "lean_enqueue", "lean_release"
			if full {
				l.enqueue, l.release = "full_enqueue", "full_release"
			} else if leases {
				l.enqueue, l.release = "lease_enqueue", "lease_release"
			}
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
			if full {
				mode = "fcall, full"
			} else if leases {
				mode = "fcall, leases"
			}
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

-- lib.lua: the helpers of every per-action Baton script.
--
-- scripts.go builds one Redis Function library from this file and every
-- operation file: each operation becomes a function that calls begin() and
-- then runs its file's body, so the helpers are defined once, when the
-- library is loaded. Where Functions are missing (miniredis) each operation
-- runs as an EVAL script: this file, then the body wrapped the same way.
-- begin() reads the clock and the action's meta once; nothing here writes by itself.
-- It returns an error reply, which the operation returns at once, when the
-- action's keys are in another version's form (SCHEMA).
--
-- Every per-action operation declares the same eight KEYS, all sharing the
-- action's hash tag {<ref>}:
--   KEYS[1] queue    LIST  waiting execution IDs, oldest first
--   KEYS[2] waiting  HASH  execution ID -> <seq: 9 base-62 digits><owner>
--   KEYS[3] running  ZSET  execution ID -> deadline (ms, Redis clock)
--   KEYS[4] holders  HASH  execution ID -> "<fence>:<owner>:<since ms>:<seq>:<state>"
--                          state: g = granted (its token may not be read yet), h = held
--   KEYS[5] owners   ZSET  owner (one Coordinator) -> liveness deadline (ms)
--   KEYS[6] meta     HASH  state (policy_version,limit,seq,fence), due (next_reclaim,
--                          indexed_due), totals (the counters), limit_source; with a
--                          rate: rate (limit,per_us,burst,tat,marked,sched) and
--                          rate_source; with a quota: quota (limit,window_ms), quota_source;
--                          once either counted something: rq_totals (throttled,quota_rejected)
--   KEYS[7] waits    HASH  wait-time histogram: le_<ms> buckets (their sum is the count), sum_us
--   KEYS[8] quota    STRING "<window start ms>:<used>", the quota counter of the
--                          current window; expires when the window ends (SET PX)
-- ARGV[1] is the action's base ("<prefix>:{<ref>}:"); grant keys of waiters
-- are built from it (same hash tag). Each script's own ARGV start at 2.
--
-- Invariants every script keeps:
--   * a slot is held by exactly the members of running; the number of
--     members (ZCARD) is what the limit is checked against, so an entry
--     whose deadline passed still counts until reclaim() has looked at it;
--   * next_reclaim is a lower bound of the deadlines in running, so no
--     script has to look for expired entries before that time;
--   * a grant ("g") whose token its waiter popped is delivered (or its reply
--     was lost, which the waiter's process reconciles): it is never taken
--     back while its owner is alive; an unread grant of a live owner goes
--     back to the head of the queue; a dead owner's grant is reclaimed;
--   * seq is the enqueue time in microseconds on the Redis clock, raised by
--     one when needed so that it is strictly increasing per action: it is
--     both the FIFO order and the enqueue timestamp;
--   * with a rate, an execution is admitted only when a token is available
--     (GCRA: tat - tau <= now) and each admission takes one (tat += T);
--     grant_waiters is the one place that decides, and it never lets a
--     later waiter pass a throttled head;
--   * with a quota, the counter of the current window holds the executions
--     accepted in it that were admitted or still wait; one that ends
--     without being admitted gives its reservation back.

-- The form of the action's keys that these scripts read and write (docs/keys.md).
-- meta's "schema" field names the form when it is not this one; absent, it
-- is this one. A later version that changes the form writes its number there,
-- and every call of this version on that action then fails with BATON_SCHEMA
-- <n> (ErrKeySchema) instead of misreading it.
local SCHEMA = '1'
-- Removal tokens nobody reads (their waiter already knows) vanish after this.
local TOKEN_TTL_MS = 60000
-- At most this many dead waiters are dropped per call; the rest are left to the sweeper.
local MAX_SKIP = 1000
-- At most this many expired entries are looked at per call.
local MAX_RECLAIM = 1000
-- next_reclaim when nothing runs.
local NEVER = 1e15
-- A token time that never comes (a rate of 0), in µs.
local NEVER_US = 1e18
-- The largest burst tolerance, in µs (31 years): keeps every time exact in a double.
local MAX_TAU = 1e15

-- The action's numbers live in three fields of meta, each a short
-- comma-separated list (docs/keys.md): "state" (policy_version, limit, seq,
-- fence), "due" (next_reclaim, indexed_due) and "totals" (the counters).
-- They are read with one HMGET into M and the changed ones written back by
-- flush() with one HSET: far cheaper than a field per number, and short
-- values keep the hash a listpack.
local STATE_PAT = '^(-?%d+),(-?%d+),(%d+),(%d+)$'
local DUE_PAT = '^(%d+),(%d+)$'
local TOTALS_PAT = '^(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+)$'
local RQ_TOTALS_PAT = '^(%d+),(%d+)$'
local RATE_PAT = '^(%d+),(%d+),(%d+),(%d+),(%d+),(%d+)$'
local QUOTA_PAT = '^(%d+),(%d+)$'
-- The counters of rates and quotas are a field of their own (rq_totals), so
-- that "totals" keeps the form every version of Baton reads.
local GROUP = {
  policy_version = 'state', limit = 'state', seq = 'state', fence = 'state',
  next_reclaim = 'due', indexed_due = 'due', throttled = 'rq', quota_rejected = 'rq',
}

-- The state of one call, set by begin(). As a Redis Function library these
-- helpers are defined once and the state is reset on every call; as an EVAL
-- script the whole file runs each time.
local K, BASE       -- the action's keys and base
local NOW_US, NOW   -- the Redis clock (µs, ms)
local M             -- the action's numbers (see flush)
local FRESH         -- the action has no state in Redis yet
local DIRTY         -- the groups of M that changed (see GROUP)
local LIMIT         -- the limit in force
local REPORT        -- due time the caller must add to the sweep index (0: none)
local ALIVE         -- owner -> liveness deadline, cached for this call
local RATE          -- the rate in force (nil: none): limit, per, burst, tat, marked, sched, t, tau
local QUOTA         -- the quota in force (nil: none): limit, win (ms)
local THROTTLED     -- µs time the head gets its token, when this call found it throttled (0: not)
local WAKE          -- µs from now at which the caller must run tick (0: none), set by flush

-- rate_derive fills a rate's emission interval t (µs per token, rounded up
-- so the rate is never exceeded) and burst tolerance tau.
local function rate_derive(r)
  if r.limit > 0 then
    r.t = math.ceil(r.per / r.limit)
    r.tau = math.min((math.max(r.burst, 1) - 1) * r.t, MAX_TAU)
  else
    r.t, r.tau = NEVER_US, 0
  end
  return r
end

-- TOTALS names the counters of "totals" in their order; TOTAL their index.
-- They are kept as the decimal strings read (T): a call converts only the
-- counters it changes, and flush joins the strings, so no call pays for
-- parsing and formatting eight numbers. The counters of rq_totals (GROUP
-- rq) are numbers in M, like state's.
local TOTALS = { 'enqueued', 'admitted', 'completed', 'timed_out', 'canceled', 'rejected', 'reclaimed', 'abandoned' }
local TOTAL = {
  enqueued = 1, admitted = 2, completed = 3, timed_out = 4, canceled = 5, rejected = 6, reclaimed = 7, abandoned = 8,
}
local T = {}

-- The last state, due and totals strings a call read or wrote, with what
-- they hold: the next call on a busy action reads the same strings back and
-- skips parsing them. A pure memo of the parse (the string alone decides the
-- numbers), so it is right for any action; as EVAL scripts it is always empty.
local MEMO_STATE, MS1, MS2, MS3, MS4 = false, 0, 0, 0, 0
local MEMO_DUE, MD1, MD2 = false, 0, 0
local MEMO_TOTALS, MT = false, {}

-- K, M and DIRTY are filled in place on every call (never rebuilt): as a
-- Function library they live across calls, and refilling a table that
-- already has its fields allocates nothing.
K, M, DIRTY = {}, {}, {}

local function begin(keys, argv)
  K.queue, K.waiting, K.running, K.holders = keys[1], keys[2], keys[3], keys[4]
  K.owners, K.meta, K.waits, K.quota = keys[5], keys[6], keys[7], keys[8]
  BASE = argv[1]
  local t = redis.call('TIME')
  -- Decimal strings become numbers by arithmetic (s + 0) on hot paths: the
  -- same conversion as tonumber, without a function call.
  NOW_US = t[1] * 1000000 + t[2]
  NOW = math.floor(NOW_US / 1000)
  M.policy_version, M.limit, M.seq, M.fence, M.next_reclaim, M.indexed_due = -1, -1, 0, 0, 0, 0
  DIRTY.state, DIRTY.due, DIRTY.totals, DIRTY.rq, DIRTY.rate = false, false, false, false, false
  FRESH, REPORT, ALIVE = true, 0, {}
  RATE, QUOTA, THROTTLED, WAKE = nil, nil, 0, 0
  M.throttled, M.quota_rejected = 0, 0
  local v = redis.call('HMGET', K.meta, 'state', 'due', 'totals', 'rate', 'quota', 'rq_totals', 'schema')
  if v[7] and v[7] ~= SCHEMA then
    -- Another version of Baton keeps this action in a form this one does not
    -- know: refuse before anything is read or written (the caller returns it).
    return redis.error_reply('BATON_SCHEMA ' .. v[7])
  end
  local s = v[1]
  if s and s == MEMO_STATE then
    FRESH = false
    M.policy_version, M.limit, M.seq, M.fence = MS1, MS2, MS3, MS4
  elseif s then
    local a, b, c, d = string.match(s, STATE_PAT)
    if a then
      FRESH = false
      M.policy_version, M.limit, M.seq, M.fence = a + 0, b + 0, c + 0, d + 0
      MEMO_STATE, MS1, MS2, MS3, MS4 = s, M.policy_version, M.limit, M.seq, M.fence
    end
  end
  s = v[2]
  if s and s == MEMO_DUE then
    M.next_reclaim, M.indexed_due = MD1, MD2
  elseif s then
    local a, b = string.match(s, DUE_PAT)
    if a then
      M.next_reclaim, M.indexed_due = a + 0, b + 0
      MEMO_DUE, MD1, MD2 = s, M.next_reclaim, M.indexed_due
    end
  end
  s = v[3]
  if s and s == MEMO_TOTALS then
    T[1], T[2], T[3], T[4], T[5], T[6], T[7], T[8] = MT[1], MT[2], MT[3], MT[4], MT[5], MT[6], MT[7], MT[8]
  else
    local a, b, c, d, e, f, g, h
    if s then
      a, b, c, d, e, f, g, h = string.match(s, TOTALS_PAT)
    end
    if a then
      T[1], T[2], T[3], T[4], T[5], T[6], T[7], T[8] = a, b, c, d, e, f, g, h
    else
      T[1], T[2], T[3], T[4], T[5], T[6], T[7], T[8] = '0', '0', '0', '0', '0', '0', '0', '0'
    end
  end
  if v[6] then
    local a, b = string.match(v[6], RQ_TOTALS_PAT)
    if a then
      M.throttled, M.quota_rejected = tonumber(a), tonumber(b)
    end
  end
  if v[4] then
    local a, b, c, d, e, f = string.match(v[4], RATE_PAT)
    if a then
      RATE = rate_derive({ limit = tonumber(a), per = tonumber(b), burst = tonumber(c), tat = tonumber(d),
        marked = tonumber(e), sched = tonumber(f) })
    end
  end
  if v[5] then
    local a, b = string.match(v[5], QUOTA_PAT)
    if a then
      QUOTA = { limit = tonumber(a), win = tonumber(b) }
    end
  end
  LIMIT = M.limit
end

-- str renders an integer-valued number without exponent or decimals.
local function str(n)
  if n == 0 then
    return '0'
  end
  return string.format('%d', n)
end

-- total returns a counter of "totals" (a TOTALS name) as a number.
local function total(f)
  return tonumber(T[TOTAL[f]])
end

-- set and bump change a number of a GROUP (state, due, rq); bump also a counter of totals.
local function set(f, n)
  M[f] = n
  DIRTY[GROUP[f]] = true
end

local function bump(f, n)
  local g = GROUP[f]
  if g then
    M[f] = M[f] + (n or 1)
    DIRTY[g] = true
  else
    local i = TOTAL[f]
    T[i] = str(T[i] + (n or 1))
    DIRTY.totals = true
  end
end

-- The arguments of flush's HSET, refilled by every flush.
local FLUSH_ARGS = {}

-- flush writes the changed groups of numbers back in one HSET. It also
-- decides whether the caller must schedule a tick: when this call found the
-- head throttled at a time no caller was told of yet (sched), it tells this
-- one (WAKE, µs from now), so one process holds the timer per token.
local function flush()
  if THROTTLED > 0 and RATE and THROTTLED ~= RATE.sched then
    RATE.sched = THROTTLED
    DIRTY.rate = true
    WAKE = math.max(THROTTLED - NOW_US, 1)
  end
  local args, n = FLUSH_ARGS, 0
  if DIRTY.state then
    MEMO_STATE = string.format('%d,%d,%d,%d', M.policy_version, M.limit, M.seq, M.fence)
    MS1, MS2, MS3, MS4 = M.policy_version, M.limit, M.seq, M.fence
    args[n + 1], args[n + 2] = 'state', MEMO_STATE
    n = n + 2
  end
  if DIRTY.due then
    MEMO_DUE, MD1, MD2 = string.format('%d,%d', M.next_reclaim, M.indexed_due), M.next_reclaim, M.indexed_due
    args[n + 1], args[n + 2] = 'due', MEMO_DUE
    n = n + 2
  end
  if DIRTY.totals then
    MEMO_TOTALS = T[1] .. ',' .. T[2] .. ',' .. T[3] .. ',' .. T[4] .. ',' .. T[5] .. ',' .. T[6] .. ',' .. T[7]
      .. ',' .. T[8]
    MT[1], MT[2], MT[3], MT[4], MT[5], MT[6], MT[7], MT[8] = T[1], T[2], T[3], T[4], T[5], T[6], T[7], T[8]
    args[n + 1], args[n + 2] = 'totals', MEMO_TOTALS
    n = n + 2
  end
  if DIRTY.rq then
    args[n + 1], args[n + 2] = 'rq_totals', string.format('%d,%d', M.throttled, M.quota_rejected)
    n = n + 2
  end
  if DIRTY.rate and RATE then
    args[n + 1] = 'rate'
    args[n + 2] = string.format('%d,%d,%d,%d,%d,%d', RATE.limit, RATE.per, RATE.burst, RATE.tat, RATE.marked,
      RATE.sched)
    n = n + 2
  end
  if n > 0 then
    redis.call('HSET', K.meta, unpack(args, 1, n))
  end
end

-- Base-62 digits: 0-9 A-Z a-z. A digit d is the byte
-- d + 48 + (d > 9 and 7 or 0) + (d > 35 and 6 or 0), written out inline below:
-- no function call or table per digit (a table would cost every EVAL call
-- its construction).

-- waiting_value packs a waiter: its seq as 9 base-62 digits, then its owner
-- (12 bytes with a 3-character owner: the allocator's 16-byte class).
local function waiting_value(seq, owner)
  local n = seq + 0
  local d9 = n % 62
  n = (n - d9) / 62
  local d8 = n % 62
  n = (n - d8) / 62
  local d7 = n % 62
  n = (n - d7) / 62
  local d6 = n % 62
  n = (n - d6) / 62
  local d5 = n % 62
  n = (n - d5) / 62
  local d4 = n % 62
  n = (n - d4) / 62
  local d3 = n % 62
  n = (n - d3) / 62
  local d2 = n % 62
  local d1 = ((n - d2) / 62) % 62
  return string.char(
    d1 + 48 + (d1 > 9 and 7 or 0) + (d1 > 35 and 6 or 0), d2 + 48 + (d2 > 9 and 7 or 0) + (d2 > 35 and 6 or 0),
    d3 + 48 + (d3 > 9 and 7 or 0) + (d3 > 35 and 6 or 0), d4 + 48 + (d4 > 9 and 7 or 0) + (d4 > 35 and 6 or 0),
    d5 + 48 + (d5 > 9 and 7 or 0) + (d5 > 35 and 6 or 0), d6 + 48 + (d6 > 9 and 7 or 0) + (d6 > 35 and 6 or 0),
    d7 + 48 + (d7 > 9 and 7 or 0) + (d7 > 35 and 6 or 0), d8 + 48 + (d8 > 9 and 7 or 0) + (d8 > 35 and 6 or 0),
    d9 + 48 + (d9 > 9 and 7 or 0) + (d9 > 35 and 6 or 0)) .. owner
end

-- parse_waiting returns the decimal seq and the owner of a waiting value.
-- The digit of a byte b is b - 48 - (b > 64 and 7 or 0) - (b > 96 and 6 or 0).
local function parse_waiting(v)
  local b1, b2, b3, b4, b5, b6, b7, b8, b9 = string.byte(v, 1, 9)
  local n = b1 - 48 - (b1 > 64 and 7 or 0) - (b1 > 96 and 6 or 0)
  n = n * 62 + b2 - 48 - (b2 > 64 and 7 or 0) - (b2 > 96 and 6 or 0)
  n = n * 62 + b3 - 48 - (b3 > 64 and 7 or 0) - (b3 > 96 and 6 or 0)
  n = n * 62 + b4 - 48 - (b4 > 64 and 7 or 0) - (b4 > 96 and 6 or 0)
  n = n * 62 + b5 - 48 - (b5 > 64 and 7 or 0) - (b5 > 96 and 6 or 0)
  n = n * 62 + b6 - 48 - (b6 > 64 and 7 or 0) - (b6 > 96 and 6 or 0)
  n = n * 62 + b7 - 48 - (b7 > 64 and 7 or 0) - (b7 > 96 and 6 or 0)
  n = n * 62 + b8 - 48 - (b8 > 64 and 7 or 0) - (b8 > 96 and 6 or 0)
  n = n * 62 + b9 - 48 - (b9 > 64 and 7 or 0) - (b9 > 96 and 6 or 0)
  return str(n), string.sub(v, 10)
end

local function grant_key(owner, exec)
  return BASE .. 'grant:' .. owner .. ':' .. exec
end

local function grant_token(seq, fence)
  return 'g:' .. seq .. ':' .. fence
end

-- push_token leaves a removal notice for one waiter: <kind>:<seq> with kind
-- c (canceled), t (timed out), e (evicted: its process was dead), s (superseded).
local function push_token(owner, exec, token)
  local key = grant_key(owner, exec)
  redis.call('RPUSH', key, token)
  redis.call('PEXPIRE', key, TOKEN_TTL_MS)
end

-- notify_owner tells an owner's wait loop that one of its waiters got a
-- removal token it may not be blocking on (it blocks on its oldest only).
local function notify_owner(owner, exec)
  local key = BASE .. 'wake:' .. owner
  redis.call('RPUSH', key, 'x:' .. exec)
  redis.call('PEXPIRE', key, TOKEN_TTL_MS)
end

local function parse_holder(h)
  local fence, owner, since, seq, state = string.match(h, '^([^:]*):([^:]*):([^:]*):([^:]*):([^:]*)$')
  return { fence = fence, owner = owner, since = since, seq = seq, state = state }
end

local function holder_value(fence, owner, since, seq, state)
  return fence .. ':' .. owner .. ':' .. since .. ':' .. seq .. ':' .. state
end

-- next_rate returns the rate a spec ("<limit>,<per_us>,<burst>,<source>",
-- or "" for none) sets (nil for none) and its source. Pure: adopt_rate
-- writes. A changed rate keeps the tokens owed: the time still owed
-- (tat - now) is rescaled to the new emission interval, so raising a rate
-- admits waiters at once and lowering it never frees a burst.
local function next_rate(spec)
  local a, b, c, source = string.match(spec or '', '^(%d+),(%d+),(%d+),(.*)$')
  if not a then
    return nil, nil
  end
  local r = rate_derive({ limit = tonumber(a), per = tonumber(b), burst = tonumber(c), tat = 0, marked = 0, sched = 0 })
  if RATE then
    r.marked = RATE.marked
    if RATE.tat > NOW_US and RATE.t < NEVER_US and r.t < NEVER_US then
      r.tat = NOW_US + math.ceil((RATE.tat - NOW_US) / RATE.t * r.t)
    elseif RATE.t < NEVER_US then
      r.tat = math.min(RATE.tat, NOW_US)
    end
  end
  return r, source
end

local function adopt_rate(spec)
  local r, source = next_rate(spec)
  if not r then
    if RATE then
      RATE = nil
      redis.call('HDEL', K.meta, 'rate', 'rate_source')
    end
    return
  end
  RATE = r
  DIRTY.rate = true
  redis.call('HSET', K.meta, 'rate_source', source)
end

-- next_quota returns the quota a spec ("<limit>,<window ms>,<source>", or
-- "" for none) sets (nil for none) and its source. Pure: adopt_quota writes.
local function next_quota(spec)
  local a, b, source = string.match(spec or '', '^(%d+),(%d+),(.*)$')
  if not a then
    return nil, nil
  end
  return { limit = tonumber(a), win = tonumber(b) }, source
end

local function adopt_quota(spec)
  local q, source = next_quota(spec)
  if not q then
    if QUOTA then
      QUOTA = nil
      redis.call('HDEL', K.meta, 'quota', 'quota_source')
    end
    return
  end
  QUOTA = q
  redis.call('HSET', K.meta, 'quota', str(q.limit) .. ',' .. str(q.win), 'quota_source', source)
end

-- adopt_policy takes the caller's resolved limit, rate and quota when its
-- policy version is newer than the one the action last saw; it reports
-- whether it did.
local function adopt_policy(version, limit, source, rate, quota)
  local v = tonumber(version)
  if v == nil or v <= M.policy_version then
    return false
  end
  set('policy_version', v)
  set('limit', tonumber(limit))
  redis.call('HSET', K.meta, 'limit_source', source)
  LIMIT = tonumber(limit)
  adopt_rate(rate)
  adopt_quota(quota)
  return true
end

-- token_at is 0 when a rate token is available now (or no rate applies),
-- else the µs time the next one becomes available (NEVER_US for a rate of 0).
local function token_at()
  if not RATE then
    return 0
  end
  if RATE.limit == 0 then
    return NEVER_US
  end
  local at = RATE.tat - RATE.tau
  if at <= NOW_US then
    return 0
  end
  return at
end

-- take_token spends one rate token on an admission.
local function take_token()
  if RATE then
    RATE.tat = math.max(RATE.tat, NOW_US) + RATE.t
    DIRTY.rate = true
  end
end

-- quota_window returns the start and end (ms) of the quota window that holds
-- the time t (ms): UTC calendar windows, multiples of their length.
local function quota_window(t)
  local start = math.floor(t / QUOTA.win) * QUOTA.win
  return start, start + QUOTA.win
end

-- quota_used returns the reservations of the current window and its end.
local function quota_used()
  local start, stop = quota_window(NOW)
  local v = redis.call('GET', K.quota)
  if v then
    local s, n = string.match(v, '^(%d+):(%d+)$')
    if s and tonumber(s) == start then
      return tonumber(n), start, stop
    end
  end
  return 0, start, stop
end

-- quota_write stores the window's count, to expire when the window ends.
local function quota_write(start, stop, n)
  redis.call('SET', K.quota, str(start) .. ':' .. str(n), 'PX', str(math.max(stop - NOW, 1)))
end

-- quota_take reserves one execution in the current window.
local function quota_take()
  if QUOTA then
    local n, start, stop = quota_used()
    quota_write(start, stop, n + 1)
  end
end

-- quota_return gives back the reservation of an execution enqueued at seq
-- (µs) that ends without being admitted, if its window is still current.
local function quota_return(seq)
  if not QUOTA then
    return
  end
  local n, start, stop = quota_used()
  if n > 0 and quota_window(math.floor(tonumber(seq) / 1000)) == start then
    quota_write(start, stop, n - 1)
  end
end

local function owner_deadline(owner)
  local d = ALIVE[owner]
  if d == nil then
    d = (redis.call('ZSCORE', K.owners, owner) or '0') + 0
    ALIVE[owner] = d
  end
  return d
end

local function owner_alive(owner)
  return owner_deadline(owner) > NOW
end

local function touch_owner(owner, lease_ms)
  local d = NOW + lease_ms
  redis.call('ZADD', K.owners, str(d), owner)
  ALIVE[owner] = d
end

local function observe_wait(seq)
  local w = NOW_US - seq
  if w < 0 then
    w = 0
  end
  local b
  if w <= 1000 then
    b = 'le_1'
  elseif w <= 5000 then
    b = 'le_5'
  elseif w <= 10000 then
    b = 'le_10'
  elseif w <= 50000 then
    b = 'le_50'
  elseif w <= 100000 then
    b = 'le_100'
  elseif w <= 500000 then
    b = 'le_500'
  elseif w <= 1000000 then
    b = 'le_1000'
  elseif w <= 5000000 then
    b = 'le_5000'
  elseif w <= 10000000 then
    b = 'le_10000'
  elseif w <= 60000000 then
    b = 'le_60000'
  else
    b = 'le_inf'
  end
  redis.call('HINCRBY', K.waits, b, 1) -- the count is the sum of the buckets
  redis.call('HINCRBY', K.waits, 'sum_us', str(w))
end



-- note_due records that the action may need a sweeper at d (ms). Only a
-- time earlier than the one already recorded (or a stale one) reaches the
-- caller, which adds it to the cross-slot sweep index: the index is written
-- rarely.
local function note_due(d)
  if d == 0 or d >= NEVER then
    return
  end
  local indexed = M.indexed_due
  if indexed == 0 or d < indexed or indexed < NOW - 5000 then
    set('indexed_due', d)
    if REPORT == 0 or d < REPORT then
      REPORT = d
    end
  end
end

-- throttle records that the head of the queue waits for the rate token due
-- at (µs): the head is counted as throttled once, the time is reported to
-- the caller (flush: WAKE) and to the sweep index as a backstop.
local function throttle(at)
  local head = redis.call('LINDEX', K.queue, 0)
  if not head then
    return
  end
  local w = redis.call('HGET', K.waiting, head)
  if w then
    local seq = tonumber((parse_waiting(w)))
    if seq ~= RATE.marked then
      RATE.marked = seq
      DIRTY.rate = true
      bump('throttled')
    end
  end
  if at < NEVER_US then
    THROTTLED = at
    note_due(math.ceil(at / 1000))
  end
end

-- lower_reclaim keeps next_reclaim a lower bound after a deadline d was
-- set, and tells the sweep index when d comes before the time it holds (a
-- grant's deadline while others wait must be looked at, even if no other
-- call on the action comes).
local function lower_reclaim(d)
  if M.next_reclaim > 0 and d < M.next_reclaim then
    set('next_reclaim', d)
  end
  note_due(d)
end

-- admit records exec as holding a slot until deadline and returns its fencing token.
local function admit(exec, owner, seq, deadline, state)
  bump('fence')
  redis.call('ZADD', K.running, str(deadline), exec)
  -- holder_value(fence, owner, NOW, seq, state), in one call
  redis.call('HSET', K.holders, exec, string.format('%d:%s:%d:%s:%s', M.fence, owner, NOW, seq, state))
  bump('admitted')
  observe_wait(seq)
  lower_reclaim(deadline)
  return M.fence
end

-- drop_holder frees exec's slot.
local function drop_holder(exec)
  redis.call('ZREM', K.running, exec)
  redis.call('HDEL', K.holders, exec)
end

-- requeue puts granted waiters whose tokens were never read back at the
-- head of the queue, their original places: every waiter still queued came
-- after them. The grants do not count as admitted.
local function requeue(list)
  table.sort(list, function(a, b) return tonumber(a.hv.seq) > tonumber(b.hv.seq) end)
  for _, r in ipairs(list) do
    drop_holder(r.exec)
    redis.call('LPUSH', K.queue, r.exec)
    redis.call('HSET', K.waiting, r.exec, waiting_value(r.hv.seq, r.hv.owner))
    bump('admitted', -1)
  end
end

-- reclaim looks at entries whose deadline passed (only once next_reclaim
-- has come, unless forced) and returns how many slots it freed:
--   held (h): the lease expired: reclaimed;
--   granted (g), token unread: the waiter goes back to the head of the
--     queue if its owner is alive, else it is dropped (abandoned);
--   granted (g), token read: delivered; it becomes a lease until the
--     owner's liveness deadline while the owner lives, else reclaimed.
local function reclaim(force)
  if not force and NOW < M.next_reclaim then
    return 0
  end
  local expired = redis.call('ZRANGEBYSCORE', K.running, '-inf', NOW, 'LIMIT', 0, MAX_RECLAIM)
  local freed, back = 0, {}
  for _, exec in ipairs(expired) do
    local h = redis.call('HGET', K.holders, exec)
    local hv = h and parse_holder(h)
    if hv and hv.state == 'g' then
      local key = grant_key(hv.owner, exec)
      local unread = redis.call('LREM', key, 1, grant_token(hv.seq, hv.fence)) == 1
      if unread and owner_alive(hv.owner) then
        back[#back + 1] = { exec = exec, hv = hv }
        freed = freed + 1
      elseif unread then
        drop_holder(exec)
        bump('admitted', -1)
        bump('abandoned')
        quota_return(hv.seq)
        freed = freed + 1
      elseif owner_alive(hv.owner) then
        redis.call('HSET', K.holders, exec, holder_value(hv.fence, hv.owner, hv.since, hv.seq, 'h'))
        redis.call('ZADD', K.running, str(owner_deadline(hv.owner)), exec)
      else
        drop_holder(exec)
        bump('reclaimed')
        freed = freed + 1
      end
    else
      drop_holder(exec)
      bump('reclaimed')
      freed = freed + 1
    end
  end
  requeue(back)
  if #expired < MAX_RECLAIM then
    local first = redis.call('ZRANGE', K.running, 0, 0, 'WITHSCORES')
    set('next_reclaim', #first == 0 and NEVER or tonumber(first[2]))
  end
  return freed
end

-- grant_waiters hands free slots to the oldest waiters of live owners, in
-- queue order, reclaiming expired entries first when the slots are full.
-- With a rate, each grant also takes a token; when none is available the
-- head stays (throttled) and nobody behind it passes. This is the one place
-- that decides to admit a waiter. Returns granted and abandoned.
local function grant_waiters(ack_ms)
  if LIMIT == 0 then
    return 0, 0
  end
  local running = redis.call('ZCARD', K.running)
  if LIMIT > 0 and running >= LIMIT then
    if reclaim(false) == 0 then
      return 0, 0
    end
    running = redis.call('ZCARD', K.running)
  end
  local granted, abandoned = 0, 0
  while LIMIT < 0 or running < LIMIT do
    if RATE then
      local at = token_at()
      if at > 0 then
        throttle(at)
        break
      end
    end
    local exec = redis.call('LPOP', K.queue)
    if not exec then
      break
    end
    local w = redis.call('HGET', K.waiting, exec)
    if w then
      redis.call('HDEL', K.waiting, exec)
      local seq, owner = parse_waiting(w)
      if owner_alive(owner) then
        take_token()
        local fence = admit(exec, owner, seq, NOW + ack_ms, 'g')
        redis.call('RPUSH', grant_key(owner, exec), grant_token(seq, str(fence)))
        granted = granted + 1
        running = running + 1
      else
        push_token(owner, exec, 'e:' .. seq)
        bump('abandoned')
        quota_return(seq)
        abandoned = abandoned + 1
        if abandoned >= MAX_SKIP then
          note_due(NOW) -- more to skip: the sweeper carries on
          break
        end
      end
    end
  end
  return granted, abandoned
end

-- settle reclaims once next_reclaim has come and grants what that freed.
local function settle(ack_ms)
  if NOW >= M.next_reclaim and reclaim(false) > 0 then
    grant_waiters(ack_ms)
  end
end

-- due_after is when a sweeper must next look at this action (0: never):
-- the first deadline, or the throttled head's token, while executions wait.
local function due_after()
  if redis.call('LLEN', K.queue) == 0 then
    return 0
  end
  local due = NOW
  if M.next_reclaim > 0 then
    due = M.next_reclaim
  end
  local at = token_at()
  if at > 0 and at < NEVER_US then
    due = math.min(due, math.ceil(at / 1000))
  end
  return due
end

-- remove_waiter takes a waiting execution out of the queue and tells its waiter why.
local function remove_waiter(exec, seq, owner, kind, counter)
  redis.call('LREM', K.queue, 1, exec)
  redis.call('HDEL', K.waiting, exec)
  bump(counter)
  quota_return(seq)
  push_token(owner, exec, kind .. ':' .. seq)
end

-- give_back returns a grant its waiter's process gave up on before it
-- delivered it: the request ends as counter (timed_out or canceled), not as
-- admitted, and the slot is free for the next waiter.
local function give_back(exec, hv, counter)
  drop_holder(exec)
  redis.call('LREM', grant_key(hv.owner, exec), 1, grant_token(hv.seq, hv.fence))
  bump('admitted', -1)
  bump(counter)
  quota_return(hv.seq)
end

-- check_waiter says where one of the caller's own waiters (exec, seq, owner) stands:
--   'q', 0       still waiting in the queue
--   'g', fence   granted to it: now a lease until NOW + lease_ms (an unread token is removed)
--   kind, 0      a removal token for it was found and taken: c, t, e or s
--   'x', 0       nowhere: Redis lost it (restart or failover), or its token was read
local function check_waiter(exec, seq, owner, lease_ms)
  local w = redis.call('HGET', K.waiting, exec)
  if w then
    local wseq, wowner = parse_waiting(w)
    if wseq == seq and wowner == owner then
      return 'q', 0
    end
  end
  local h = redis.call('HGET', K.holders, exec)
  if h then
    local hv = parse_holder(h)
    if hv.seq == seq and hv.owner == owner then
      if hv.state == 'g' then
        redis.call('LREM', grant_key(owner, exec), 1, grant_token(hv.seq, hv.fence))
        redis.call('HSET', K.holders, exec, holder_value(hv.fence, owner, hv.since, hv.seq, 'h'))
      end
      redis.call('ZADD', K.running, str(NOW + tonumber(lease_ms)), exec)
      return 'g', tonumber(hv.fence)
    end
  end
  local key = grant_key(owner, exec)
  for _, t in ipairs(redis.call('LRANGE', key, 0, -1)) do
    local kind, tseq = string.match(t, '^(%a):(%d+)')
    if tseq == seq and kind ~= 'g' then
      redis.call('LREM', key, 1, t)
      return kind, 0
    end
  end
  return 'x', 0
end

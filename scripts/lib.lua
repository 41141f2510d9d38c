-- lib.lua: the prelude of every per-action Baton script.
--
-- scripts.go puts this file in front of each operation script, so every
-- script sees the same key table, clock and invariants. It defines locals
-- and reads the action's meta hash once; it writes nothing by itself.
--
-- Every per-action script declares the same seven KEYS, all sharing the
-- action's hash tag {<ref>}:
--   KEYS[1] queue    LIST  waiting execution IDs, oldest first
--   KEYS[2] waiting  HASH  execution ID -> <seq: 9 base-62 digits><owner>
--   KEYS[3] running  ZSET  execution ID -> deadline (ms, Redis clock)
--   KEYS[4] holders  HASH  execution ID -> "<fence>:<owner>:<since ms>:<seq>:<state>"
--                          state: g = granted (its token may not be read yet), h = held
--   KEYS[5] owners   ZSET  owner (one Coordinator) -> liveness deadline (ms)
--   KEYS[6] meta     HASH  limit, limit_source, policy_version, fence, seq,
--                          next_reclaim, indexed_due and the totals
--   KEYS[7] waits    HASH  wait-time histogram: le_<ms> buckets (their sum is the count), sum_us
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
--     both the FIFO order and the enqueue timestamp.

local K = {
  queue = KEYS[1], waiting = KEYS[2], running = KEYS[3], holders = KEYS[4],
  owners = KEYS[5], meta = KEYS[6], waits = KEYS[7],
}
local BASE = ARGV[1]

-- Removal tokens nobody reads (their waiter already knows) vanish after this.
local TOKEN_TTL_MS = 60000
-- At most this many dead waiters are dropped per call; the rest are left to the sweeper.
local MAX_SKIP = 1000
-- At most this many expired entries are looked at per call.
local MAX_RECLAIM = 1000
-- next_reclaim when nothing runs.
local NEVER = 1e15

local TIME = redis.call('TIME')
local NOW_US = tonumber(TIME[1]) * 1000000 + tonumber(TIME[2])
local NOW = math.floor(NOW_US / 1000)

-- The numeric meta fields, read once; changes are written back by flush().
local FIELDS = { 'policy_version', 'limit', 'seq', 'fence', 'next_reclaim', 'indexed_due',
  'enqueued', 'admitted', 'completed', 'timed_out', 'canceled', 'rejected', 'reclaimed', 'abandoned' }
local M, DIRTY = {}, {}
do
  local v = redis.call('HMGET', K.meta, unpack(FIELDS))
  for i, f in ipairs(FIELDS) do
    M[f] = tonumber(v[i])
  end
end
local LIMIT = M.limit or -1
local REPORT = 0 -- due time the caller must add to the sweep index (0: none)

-- str renders an integer-valued number without exponent (Lua prints 1e15 as 1e+15).
local function str(n)
  return string.format('%.0f', n)
end

local function set(f, n)
  M[f] = n
  DIRTY[f] = true
end

local function bump(f, n)
  set(f, (M[f] or 0) + (n or 1))
end

-- flush writes every changed meta field in one HSET.
local function flush()
  local args = {}
  for f in pairs(DIRTY) do
    args[#args + 1] = f
    args[#args + 1] = str(M[f])
  end
  if #args > 0 then
    redis.call('HSET', K.meta, unpack(args))
  end
end

local B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

-- waiting_value packs a waiter: its seq as 9 base-62 digits, then its owner
-- (12 bytes with a 3-character owner: the allocator's 16-byte class).
local function waiting_value(seq, owner)
  local n = tonumber(seq)
  local digits = {}
  for i = 9, 1, -1 do
    local d = n % 62
    digits[i] = string.sub(B62, d + 1, d + 1)
    n = (n - d) / 62
  end
  return table.concat(digits) .. owner
end

-- parse_waiting returns the decimal seq and the owner of a waiting value.
local function parse_waiting(v)
  local n = 0
  for i = 1, 9 do
    n = n * 62 + string.find(B62, string.sub(v, i, i), 1, true) - 1
  end
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

local function parse_holder(h)
  local f = {}
  for part in string.gmatch(h, '[^:]+') do
    f[#f + 1] = part
  end
  return { fence = f[1], owner = f[2], since = f[3], seq = f[4], state = f[5] }
end

local function holder_value(fence, owner, since, seq, state)
  return fence .. ':' .. owner .. ':' .. since .. ':' .. seq .. ':' .. state
end

-- adopt_policy takes the caller's resolved limit when its policy version is
-- newer than the one the action last saw; it reports whether it did.
local function adopt_policy(version, limit, source)
  local v = tonumber(version)
  if v == nil or v <= (M.policy_version or -1) then
    return false
  end
  set('policy_version', v)
  set('limit', tonumber(limit))
  redis.call('HSET', K.meta, 'limit_source', source)
  LIMIT = tonumber(limit)
  return true
end

local ALIVE = {} -- owner -> deadline, cached for this call
local function owner_deadline(owner)
  local d = ALIVE[owner]
  if d == nil then
    d = tonumber(redis.call('ZSCORE', K.owners, owner) or '0')
    ALIVE[owner] = d
  end
  return d
end

local function owner_alive(owner)
  return owner_deadline(owner) > NOW
end

local function touch_owner(owner, lease_ms)
  local d = NOW + tonumber(lease_ms)
  redis.call('ZADD', K.owners, d, owner)
  ALIVE[owner] = d
end

local WAIT_BUCKETS_MS = { 1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 60000 }

local function observe_wait(seq)
  local wait_us = NOW_US - tonumber(seq)
  if wait_us < 0 then
    wait_us = 0
  end
  local bucket = 'le_inf'
  for _, b in ipairs(WAIT_BUCKETS_MS) do
    if wait_us <= b * 1000 then
      bucket = 'le_' .. b
      break
    end
  end
  redis.call('HINCRBY', K.waits, bucket, 1) -- the count is the sum of the buckets
  redis.call('HINCRBY', K.waits, 'sum_us', str(wait_us))
end

-- lower_reclaim keeps next_reclaim a lower bound after a deadline d was set.
local function lower_reclaim(d)
  if M.next_reclaim ~= nil and d < M.next_reclaim then
    set('next_reclaim', d)
  end
end

-- admit records exec as holding a slot until deadline and returns its fencing token.
local function admit(exec, owner, seq, deadline, state)
  bump('fence')
  redis.call('ZADD', K.running, deadline, exec)
  redis.call('HSET', K.holders, exec, holder_value(str(M.fence), owner, str(NOW), seq, state))
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
  if not force and NOW < (M.next_reclaim or 0) then
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
        freed = freed + 1
      elseif owner_alive(hv.owner) then
        redis.call('HSET', K.holders, exec, holder_value(hv.fence, hv.owner, hv.since, hv.seq, 'h'))
        redis.call('ZADD', K.running, owner_deadline(hv.owner), exec)
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

-- note_due records that the action may need a sweeper at d (ms). Only a
-- time earlier than the one already recorded (or a stale one) reaches the
-- caller, which adds it to the cross-slot sweep index: the index is written
-- rarely.
local function note_due(d)
  if d == 0 or d >= NEVER then
    return
  end
  local indexed = M.indexed_due or 0
  if indexed == 0 or d < indexed or indexed < NOW - 5000 then
    set('indexed_due', d)
    if REPORT == 0 or d < REPORT then
      REPORT = d
    end
  end
end

-- grant_waiters hands free slots to the oldest waiters of live owners, in
-- queue order, reclaiming expired entries first when the slots are full.
-- Returns granted and abandoned.
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
    local exec = redis.call('LPOP', K.queue)
    if not exec then
      break
    end
    local w = redis.call('HGET', K.waiting, exec)
    if w then
      redis.call('HDEL', K.waiting, exec)
      local seq, owner = parse_waiting(w)
      if owner_alive(owner) then
        local fence = admit(exec, owner, seq, NOW + tonumber(ack_ms), 'g')
        redis.call('RPUSH', grant_key(owner, exec), grant_token(seq, str(fence)))
        granted = granted + 1
        running = running + 1
      else
        push_token(owner, exec, 'e:' .. seq)
        bump('abandoned')
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
  if NOW >= (M.next_reclaim or 0) and reclaim(false) > 0 then
    grant_waiters(ack_ms)
  end
end

-- due_after is when a sweeper must next look at this action (0: never):
-- the first deadline, while executions wait.
local function due_after()
  if redis.call('LLEN', K.queue) == 0 then
    return 0
  end
  return M.next_reclaim or NOW
end

-- remove_waiter takes a waiting execution out of the queue and tells its waiter why.
local function remove_waiter(exec, seq, owner, kind, counter)
  redis.call('LREM', K.queue, 1, exec)
  redis.call('HDEL', K.waiting, exec)
  bump(counter)
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
      redis.call('ZADD', K.running, NOW + tonumber(lease_ms), exec)
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

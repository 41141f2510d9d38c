-- lib.lua: helpers shared by every per-action Baton script.
--
-- scripts.go prepends this file to each operation script, so every script
-- sees the same key table, clock and invariants. It defines locals only and
-- writes nothing by itself.
--
-- Every per-action script declares the same first seven KEYS, all sharing the
-- action's hash tag {<ref>}:
--   KEYS[1] queue    LIST  waiting execution IDs, oldest first
--   KEYS[2] waiting  HASH  execution ID -> <seq: 9 base-62 digits><owner>
--   KEYS[3] running  ZSET  execution ID -> lease deadline (ms, Redis clock)
--   KEYS[4] holders  HASH  execution ID -> "<fence>:<owner>:<since ms>:<seq>:<state>"
--                          state: g = granted, not yet acknowledged; h = held
--   KEYS[5] owners   ZSET  owner (one Coordinator) -> liveness deadline (ms)
--   KEYS[6] meta     HASH  limit, limit_source, policy_version, fence, seq,
--                          indexed_due and the totals
--   KEYS[7] waits    HASH  wait-time histogram: le_<ms> buckets (their sum is the count), sum_us
-- Grant and wake keys of other waiters are derived from KEYS[1] (same tag).
--
-- seq is the enqueue time in microseconds on the Redis clock, raised by one
-- when needed so that it is strictly increasing per action: it is both the
-- FIFO order and the enqueue timestamp.

local K = {
  queue = KEYS[1], waiting = KEYS[2], running = KEYS[3], holders = KEYS[4],
  owners = KEYS[5], meta = KEYS[6], waits = KEYS[7],
}
local BASE = string.sub(KEYS[1], 1, -6) -- "<prefix>:{<ref>}:" without "queue"

-- Keys holding a token nobody reads (the waiter's process died) vanish after this.
local TOKEN_TTL_MS = 60000
-- At most this many dead waiters are dropped per call; the rest are left to the sweeper.
local MAX_SKIP = 1000
-- At most this many expired leases are reclaimed per call.
local MAX_RECLAIM = 1000

local TIME = redis.call('TIME')
local NOW_US = tonumber(TIME[1]) * 1000000 + tonumber(TIME[2])
local NOW = math.floor(NOW_US / 1000)

-- The meta fields every script needs, read once.
local META = redis.call('HMGET', K.meta, 'policy_version', 'limit', 'seq', 'indexed_due')
local LIMIT = tonumber(META[2] or '-1')
local INDEXED = tonumber(META[4] or '0') -- meta.indexed_due as this call leaves it
local REPORT = 0 -- due time the caller must add to the sweep index (0: none)

-- str renders an integer-valued number without exponent (Lua prints 1e15 as 1e+15).
local function str(n)
  return string.format('%.0f', n)
end

local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^:]+') do
    out[#out + 1] = part
  end
  return out
end

local B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

-- waiting_value packs a waiter: its seq as 9 base-62 digits, then its owner.
-- With a 3-character owner that is 12 bytes, which keeps the HASH value in
-- the allocator's 16-byte class (a decimal "<seq>:<owner>" took 32).
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

-- push_token leaves a wake-up for one waiter: g:<seq>:<fence> (granted) or
-- <kind>:<seq> with kind c (canceled), t (timed out), e (evicted), s (superseded).
local function push_token(owner, exec, token)
  local key = grant_key(owner, exec)
  redis.call('RPUSH', key, token)
  redis.call('PEXPIRE', key, TOKEN_TTL_MS)
end

local function parse_holder(h)
  local f = split(h)
  return { fence = f[1], owner = f[2], since = f[3], seq = f[4], state = f[5] }
end

local function holder_value(fence, owner, since, seq, state)
  return fence .. ':' .. owner .. ':' .. since .. ':' .. seq .. ':' .. state
end

-- adopt_policy takes the caller's resolved limit when its policy version is
-- newer than the one the action last saw; it reports whether it did.
local function adopt_policy(version, limit, source)
  local v = tonumber(version)
  if v == nil or v <= tonumber(META[1] or '-1') then
    return false
  end
  redis.call('HSET', K.meta, 'policy_version', version, 'limit', limit, 'limit_source', source)
  LIMIT = tonumber(limit)
  return true
end

-- active counts running entries whose lease has not expired.
local function active()
  return redis.call('ZCOUNT', K.running, '(' .. NOW, '+inf')
end

local function owner_alive(owner)
  local d = redis.call('ZSCORE', K.owners, owner)
  return d and tonumber(d) > NOW
end

local function touch_owner(owner, lease_ms)
  redis.call('ZADD', K.owners, NOW + tonumber(lease_ms), owner)
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

-- reclaim removes expired leases. An expired grant that was never
-- acknowledged marks its owner dead, so its other waiters are skipped
-- instead of being granted (and timing out) one by one.
local function reclaim()
  local expired = redis.call('ZRANGEBYSCORE', K.running, '-inf', NOW, 'LIMIT', 0, MAX_RECLAIM)
  for _, exec in ipairs(expired) do
    local h = redis.call('HGET', K.holders, exec)
    redis.call('ZREM', K.running, exec)
    redis.call('HDEL', K.holders, exec)
    if h then
      local hv = parse_holder(h)
      if hv.state == 'g' then
        redis.call('ZREM', K.owners, hv.owner)
      end
    end
    redis.call('HINCRBY', K.meta, 'reclaimed', 1)
  end
  return #expired
end

-- admit records exec as running and returns its fencing token.
local function admit(exec, owner, seq, deadline, state)
  local fence = redis.call('HINCRBY', K.meta, 'fence', 1)
  redis.call('ZADD', K.running, deadline, exec)
  redis.call('HSET', K.holders, exec, holder_value(str(fence), owner, str(NOW), seq, state))
  redis.call('HINCRBY', K.meta, 'admitted', 1)
  observe_wait(seq)
  return fence
end

-- note_due records that the action may need a sweeper at d (ms): a new
-- deadline while executions wait. Only a time earlier than the one already
-- recorded (or a stale one) reaches the caller, which adds it to the
-- cross-slot sweep index, so the index is written rarely.
local function note_due(d)
  if d == 0 then
    return
  end
  if INDEXED == 0 or d < INDEXED or INDEXED < NOW - 5000 then
    INDEXED = d
    redis.call('HSET', K.meta, 'indexed_due', str(d))
    if REPORT == 0 or d < REPORT then
      REPORT = d
    end
  end
end

-- grant_waiters hands free slots to the oldest live waiters, in queue order.
-- Returns granted and abandoned. Only a call that freed a slot (release,
-- reclaim, give-back) or raised the limit needs it: otherwise the queue is
-- empty or the slots are full.
local function grant_waiters(ack_ms)
  local limit = LIMIT
  local running = active()
  local granted, abandoned = 0, 0
  while limit < 0 or running < limit do
    local exec = redis.call('LPOP', K.queue)
    if not exec then
      break
    end
    local w = redis.call('HGET', K.waiting, exec)
    if w then
      redis.call('HDEL', K.waiting, exec)
      local seq, owner = parse_waiting(w)
      if owner_alive(owner) then
        local deadline = NOW + tonumber(ack_ms)
        local fence = admit(exec, owner, seq, deadline, 'g')
        push_token(owner, exec, 'g:' .. seq .. ':' .. str(fence))
        note_due(deadline)
        granted = granted + 1
        running = running + 1
      else
        push_token(owner, exec, 'e:' .. seq)
        redis.call('HINCRBY', K.meta, 'abandoned', 1)
        abandoned = abandoned + 1
        if abandoned >= MAX_SKIP then
          note_due(NOW) -- more to skip: the sweeper carries on
          return granted, abandoned
        end
      end
    end
  end
  return granted, abandoned
end

-- earliest_deadline is the first lease or grant deadline (0: nothing runs).
local function earliest_deadline()
  local first = redis.call('ZRANGE', K.running, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return 0
  end
  return tonumber(first[2])
end

-- next_due is when the sweeper must next look at this action, computed from
-- scratch (0: never): the earliest deadline, while executions wait.
local function next_due()
  if redis.call('LLEN', K.queue) == 0 then
    return 0
  end
  return earliest_deadline()
end

-- reclaim_and_grant reclaims expired leases and, if that or a policy change
-- may have freed slots, grants them.
local function reclaim_and_grant(policy_changed, ack_ms)
  if reclaim() > 0 or policy_changed then
    grant_waiters(ack_ms)
  end
end

-- remove_waiter takes a waiting execution out of the queue and tells its waiter why.
local function remove_waiter(exec, seq, owner, kind, counter)
  redis.call('LREM', K.queue, 1, exec)
  redis.call('HDEL', K.waiting, exec)
  redis.call('HINCRBY', K.meta, counter, 1)
  push_token(owner, exec, kind .. ':' .. seq)
end

-- give_back returns a grant that its waiter gave up on before acknowledging
-- it: the request ends as counter (timed_out or canceled), not as admitted,
-- and the slot passes to the next waiter.
local function give_back(exec, counter)
  redis.call('ZREM', K.running, exec)
  redis.call('HDEL', K.holders, exec)
  redis.call('HINCRBY', K.meta, 'admitted', -1)
  redis.call('HINCRBY', K.meta, counter, 1)
end


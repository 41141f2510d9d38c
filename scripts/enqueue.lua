-- enqueue.lua: admit an execution at once if a slot and a rate token are
-- free and nobody waits, else append it to the action's FIFO queue; refuse
-- it, storing nothing, when the quota of the window is used up.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] execution ID
-- ARGV[3] owner (the calling Coordinator)
-- ARGV[4] max queue length (-1: unbounded)
-- ARGV[5] lease TTL (ms)
-- ARGV[6] acknowledgement deadline for grants this call hands out (ms)
-- ARGV[7] caller's policy version, ARGV[8] its resolved limit, ARGV[9] the limit's source,
-- ARGV[10] its rate spec, ARGV[11] its quota spec (see adopt_policy in lib.lua)
--
-- Reply {status, fence, seq, due, wake, retry_at}:
--   "admitted" fence seq due wake 0   admitted now (fast path)
--   "running"  fence seq due wake 0   already holds a slot: the caller takes over its lease
--   "queued"   0     seq due wake 0   waiting (new, or re-attached keeping its place)
--   "full"     0     ""  0   0    0   the queue holds ARGV[4] executions; nothing stored
--   "quota"    0     ""  0   0    t q the quota of the window is used up; nothing
--                                     stored; t (ms) is when the window ends, q the
--                                     quota in force: "<limit>,<window ms>,<source>"
-- due > 0 asks the caller to add the action to the sweep index at that time;
-- wake > 0 asks it to run tick.lua in wake µs (a throttled head's token).
--
-- Idempotent per execution ID: a retry finds the execution running or
-- waiting, and neither takes a second token nor counts twice against the quota.
local exec, owner = ARGV[2], ARGV[3]
local max_queue, lease_ms, ack_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

if adopt_policy(ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]) then
  grant_waiters(ack_ms)
end
settle(ack_ms)

local h = redis.call('HGET', K.holders, exec)
if h then
  local hv = parse_holder(h)
  if hv.state == 'g' then
    redis.call('LREM', grant_key(hv.owner, exec), 1, grant_token(hv.seq, hv.fence))
    if hv.owner ~= owner then
      push_token(hv.owner, exec, 's:' .. hv.seq)
    end
  end
  redis.call('HSET', K.holders, exec, holder_value(hv.fence, owner, hv.since, hv.seq, 'h'))
  redis.call('ZADD', K.running, str(NOW + lease_ms), exec)
  touch_owner(owner, lease_ms)
  flush()
  return { 'running', tonumber(hv.fence), hv.seq, str(REPORT), str(WAKE), '0' }
end

local w = redis.call('HGET', K.waiting, exec)
if w then
  local wseq, wowner = parse_waiting(w)
  if wowner ~= owner then
    redis.call('HSET', K.waiting, exec, waiting_value(wseq, owner))
    push_token(wowner, exec, 's:' .. wseq)
    notify_owner(wowner, exec)
    -- Tokens left on this owner's key for the same seq (say, an "s" from
    -- when it lost the execution before) are stale: they must not end the
    -- waiter it registers now.
    redis.call('DEL', grant_key(owner, exec))
  end
  touch_owner(owner, lease_ms)
  flush()
  return { 'queued', 0, wseq, str(REPORT), str(WAKE), '0' }
end

if QUOTA then
  local used, _, stop = quota_used()
  if used >= QUOTA.limit then
    bump('quota_rejected')
    flush()
    local source = redis.call('HGET', K.meta, 'quota_source') or 'default'
    return { 'quota', 0, '', 0, '0', str(stop), str(QUOTA.limit) .. ',' .. str(QUOTA.win) .. ',' .. source }
  end
end

local queued = redis.call('LLEN', K.queue)
if max_queue >= 0 and queued >= max_queue then
  bump('rejected')
  flush()
  return { 'full', 0, '', 0, '0', '0' }
end

local seq = NOW_US
if seq <= M.seq then
  seq = M.seq + 1
end
set('seq', seq)
seq = str(seq)
bump('enqueued')
quota_take()

local at = 0 -- a slot is free but the rate token is not: the new head is throttled
if queued == 0 and (LIMIT < 0 or (LIMIT > 0 and redis.call('ZCARD', K.running) < LIMIT)) then
  at = token_at()
  if at == 0 then
    take_token()
    local fence = admit(exec, owner, seq, NOW + lease_ms, 'h')
    flush()
    return { 'admitted', fence, seq, str(REPORT), '0', '0' }
  end
end

touch_owner(owner, lease_ms) -- a waiter is skipped once its owner stops renewing
redis.call('RPUSH', K.queue, exec)
redis.call('HSET', K.waiting, exec, waiting_value(seq, owner))
if queued == 0 then
  note_due(M.next_reclaim > 0 and M.next_reclaim or NOW) -- the first waiter: a sweeper must watch the deadlines
end
if at > 0 then
  throttle(at)
end
flush()
return { 'queued', 0, seq, str(REPORT), str(WAKE), '0' }

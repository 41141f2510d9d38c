-- enqueue.lua: admit an execution at once if a slot is free and nobody
-- waits, else append it to the action's FIFO queue.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- KEYS[8]    grant key of (ARGV[2], ARGV[1])
-- ARGV[1] execution ID
-- ARGV[2] owner (the calling Coordinator)
-- ARGV[3] max queue length (-1: unbounded)
-- ARGV[4] lease TTL (ms)
-- ARGV[5] acknowledgement deadline for grants this call hands out (ms)
-- ARGV[6] caller's policy version, ARGV[7] its resolved limit, ARGV[8] the limit's source
--
-- Reply {status, fence, seq, due}:
--   "admitted" fence seq due   admitted now (fast path)
--   "running"  fence seq due   already running: the caller takes over its lease
--   "queued"   0     seq due   waiting (new, or re-attached keeping its place)
--   "full"     0     ""  0     the queue holds ARGV[3] executions; nothing stored
-- due > 0 asks the caller to add the action to the sweep index at that time.
--
-- Idempotent per execution ID: a retry finds the execution running or waiting.
local exec, owner = ARGV[1], ARGV[2]
local max_queue, lease_ms, ack_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

reclaim_and_grant(adopt_policy(ARGV[6], ARGV[7], ARGV[8]), ack_ms)

local h = redis.call('HGET', K.holders, exec)
if h then
  local hv = parse_holder(h)
  if hv.owner ~= owner and hv.state == 'g' then
    push_token(hv.owner, exec, 's:' .. hv.seq)
  end
  redis.call('HSET', K.holders, exec, holder_value(hv.fence, owner, hv.since, hv.seq, 'h'))
  redis.call('ZADD', K.running, NOW + lease_ms, exec)
  touch_owner(owner, lease_ms)
  return { 'running', tonumber(hv.fence), hv.seq, 0 }
end

local w = redis.call('HGET', K.waiting, exec)
if w then
  local wseq, wowner = parse_waiting(w)
  if wowner ~= owner then
    redis.call('HSET', K.waiting, exec, waiting_value(wseq, owner))
    push_token(wowner, exec, 's:' .. wseq)
    redis.call('DEL', KEYS[8])
  end
  touch_owner(owner, lease_ms)
  return { 'queued', 0, wseq, str(REPORT) }
end

local queued = redis.call('LLEN', K.queue)
if max_queue >= 0 and queued >= max_queue then
  redis.call('HINCRBY', K.meta, 'rejected', 1)
  return { 'full', 0, '', 0 }
end

local seq = NOW_US
local last = tonumber(META[3] or '0')
if seq <= last then
  seq = last + 1
end
seq = str(seq)
redis.call('HSET', K.meta, 'seq', seq)
redis.call('HINCRBY', K.meta, 'enqueued', 1)

if queued == 0 and (LIMIT < 0 or active() < LIMIT) then
  local fence = admit(exec, owner, seq, NOW + lease_ms, 'h')
  return { 'admitted', fence, seq, 0 }
end

touch_owner(owner, lease_ms) -- a waiter is skipped once its owner stops renewing
redis.call('RPUSH', K.queue, exec)
redis.call('HSET', K.waiting, exec, waiting_value(seq, owner))
redis.call('DEL', KEYS[8])
if queued == 0 then
  note_due(earliest_deadline()) -- the first waiter: a sweeper must watch the leases
end
return { 'queued', 0, seq, str(REPORT) }

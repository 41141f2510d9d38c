-- ack.lua: a waiter's process confirms it received its grant; the grant's
-- short acknowledgement deadline becomes a full lease.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] execution ID
-- ARGV[2] fencing token from the grant
-- ARGV[3] owner acknowledging
-- ARGV[4] lease TTL (ms)
-- ARGV[5] acknowledgement deadline for grants this call hands out (ms)
--
-- Reply {ok, due}: ok 1 when the grant still stands and is now a lease; 0
-- when it was reclaimed or superseded (the waiter must not run).
-- Idempotent: acknowledging twice extends the same lease.
local exec, fence, owner, lease_ms, ack_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

reclaim_and_grant(false, ack_ms)
local ok = 0
local h = redis.call('HGET', K.holders, exec)
if h then
  local hv = parse_holder(h)
  if hv.fence == fence and hv.owner == owner then
    redis.call('HSET', K.holders, exec, holder_value(hv.fence, owner, hv.since, hv.seq, 'h'))
    redis.call('ZADD', K.running, NOW + lease_ms, exec)
    ok = 1
  end
end
return { ok, str(REPORT) }

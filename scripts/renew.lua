-- renew.lua: one heartbeat of one Coordinator for one action. It keeps the
-- owner alive (its waiters are not skipped) and extends the leases it holds.
-- One call per (process, action) per interval, whatever the number of executions.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] owner
-- ARGV[2] lease TTL (ms)
-- ARGV[3] acknowledgement deadline for the grants this call hands out (ms)
-- ARGV[4] caller's policy version, ARGV[5] its resolved limit, ARGV[6] the limit's source
-- ARGV[7] the owner's oldest local waiter of this action ("" if none)
-- ARGV[8] that waiter's seq
-- ARGV[9..] pairs of execution ID and fencing token the owner believes it holds
--
-- Reply {due, waiter_ok, lost...}: due as in lib.lua's next_due (always
-- reported, so the sweep index heals if a sweeper died holding a claim);
-- waiter_ok 0 when the oldest waiter is neither queued nor granted to the
-- owner (Redis lost it: restart or failover); then the execution IDs whose
-- lease is gone (reclaimed, released or re-granted).
local owner, lease_ms, ack_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3]

reclaim_and_grant(adopt_policy(ARGV[4], ARGV[5], ARGV[6]), ack_ms)
touch_owner(owner, lease_ms)
redis.call('ZREMRANGEBYSCORE', K.owners, '-inf', NOW)

local waiter_ok = 1
if ARGV[7] ~= '' then
  local w = redis.call('HGET', K.waiting, ARGV[7])
  local h = redis.call('HGET', K.holders, ARGV[7])
  local queued = false
  if w then
    local wseq, wowner = parse_waiting(w)
    queued = wseq == ARGV[8] and wowner == owner
  end
  local granted = h and parse_holder(h).seq == ARGV[8] and parse_holder(h).owner == owner
  if not queued and not granted then
    waiter_ok = 0
  end
end

local reply = { '0', waiter_ok }
for i = 9, #ARGV, 2 do
  local exec, fence = ARGV[i], ARGV[i + 1]
  local h = redis.call('HGET', K.holders, exec)
  local kept = false
  if h then
    local hv = parse_holder(h)
    if hv.fence == fence and hv.owner == owner then
      redis.call('ZADD', K.running, NOW + lease_ms, exec)
      kept = true
    end
  end
  if not kept then
    reply[#reply + 1] = exec
  end
end

local due = next_due()
note_due(due)
reply[1] = str(due)
return reply

-- renew.lua: one heartbeat of one Coordinator for one action. It keeps the
-- owner alive (its waiters are not skipped), extends the leases it holds,
-- and checks its oldest waiter. One call per (process, action) per
-- interval, whatever the number of executions.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] owner
-- ARGV[3] lease TTL (ms)
-- ARGV[4] acknowledgement deadline for the grants this call hands out (ms)
-- ARGV[5] caller's policy version, ARGV[6] its resolved limit, ARGV[7] the limit's source,
-- ARGV[8] its rate spec, ARGV[9] its quota spec
-- ARGV[10] the owner's oldest local waiter of this action ("" if none), ARGV[11] its seq
-- ARGV[12..] pairs of execution ID and fencing token the owner believes it holds
--
-- Reply {due, oldest_status, oldest_fence, wake, lost...}: wake as
-- release.lua's; due is when a sweeper
-- must next visit (always reported, so the sweep index heals if a sweeper
-- died holding a claim); oldest_status and oldest_fence as check_waiter in
-- lib.lua ("" with no oldest waiter); then the execution IDs whose lease is
-- gone (reclaimed, released or re-granted).
local owner, lease_ms, ack_ms = ARGV[2], tonumber(ARGV[3]), ARGV[4]

if adopt_policy(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]) then
  grant_waiters(ack_ms)
end
touch_owner(owner, lease_ms)
redis.call('ZREMRANGEBYSCORE', K.owners, '-inf', NOW)

local reply = { '0', '', 0, '0' }
for i = 12, #ARGV, 2 do
  local exec, fence = ARGV[i], ARGV[i + 1]
  local h = redis.call('HGET', K.holders, exec)
  local kept = false
  if h then
    local hv = parse_holder(h)
    if hv.fence == fence and hv.owner == owner then
      if hv.state == 'g' then
        redis.call('HSET', K.holders, exec, holder_value(hv.fence, owner, hv.since, hv.seq, 'h'))
      end
      redis.call('ZADD', K.running, str(NOW + lease_ms), exec)
      kept = true
    end
  end
  if not kept then
    reply[#reply + 1] = exec
  end
end
settle(ack_ms)
if ARGV[10] ~= '' then
  reply[2], reply[3] = check_waiter(ARGV[10], ARGV[11], owner, lease_ms)
end

local due = due_after()
note_due(due)
reply[1] = str(due)
flush()
reply[4] = str(WAKE)
return reply

-- release.lua: free the slot of a running execution and hand it to the
-- oldest live waiter in the same step.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] execution ID
-- ARGV[2] fencing token the caller holds ("0": any; NotifyCompletion by ID)
-- ARGV[3] acknowledgement deadline for the grants this call hands out (ms)
-- ARGV[4] caller's policy version, ARGV[5] its resolved limit, ARGV[6] the limit's source
--
-- Reply {held, granted, due}:
--   held    1 if the execution held a slot (now freed), 0 if nothing changed
--   granted waiters admitted by this call
--   due     > 0: add the action to the sweep index at that time
--
-- Idempotent: an unknown, completed or re-granted (other fence) execution
-- changes nothing, so a count never goes negative and no other slot is freed.
local exec, fence, ack_ms = ARGV[1], ARGV[2], ARGV[3]

local changed = adopt_policy(ARGV[4], ARGV[5], ARGV[6])
local reclaimed = reclaim()

local held = 0
local h = redis.call('HGET', K.holders, exec)
if h then
  local hv = parse_holder(h)
  if fence == '0' or hv.fence == fence then
    redis.call('ZREM', K.running, exec)
    redis.call('HDEL', K.holders, exec)
    redis.call('HINCRBY', K.meta, 'completed', 1)
    held = 1
  end
end

local granted = 0
if held == 1 or reclaimed > 0 or changed then
  granted = grant_waiters(ack_ms)
end
return { held, granted, str(REPORT) }

-- apply_policy.lua: push a new resolved limit to one action at once. Raising
-- the limit grants waiters now; lowering it admits no one until the running
-- count is under the new limit. An action with no state in Redis is left
-- alone (nothing is created): its first enqueue adopts the policy.
--
-- KEYS[1..7] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] policy version, ARGV[3] resolved limit, ARGV[4] the limit's source
-- ARGV[5] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {granted, due}. An older version than the action's changes nothing.
if FRESH then
  return { 0, '0' }
end
local granted = 0
if adopt_policy(ARGV[2], ARGV[3], ARGV[4]) then
  granted = grant_waiters(ARGV[5])
end
flush()
return { granted, str(REPORT) }

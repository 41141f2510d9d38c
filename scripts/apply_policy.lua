-- apply_policy.lua: push a new resolved limit to one action at once. Raising
-- the limit grants waiters now; lowering it admits no one until the running
-- count is under the new limit.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] policy version, ARGV[2] resolved limit, ARGV[3] the limit's source
-- ARGV[4] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {granted, due}. An older version than the action's changes nothing.
adopt_policy(ARGV[1], ARGV[2], ARGV[3])
reclaim()
local granted = grant_waiters(ARGV[4])
return { granted, str(REPORT) }

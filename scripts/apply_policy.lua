-- apply_policy.lua: push a new resolved limit, rate and quota to one action
-- at once. Raising the limit or the rate grants waiters now; lowering the
-- limit admits no one until the running count is under the new limit. An action with no state in Redis is left
-- alone (nothing is created): its first enqueue adopts the policy.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] policy version, ARGV[3] resolved limit, ARGV[4] the limit's source
-- ARGV[5] acknowledgement deadline for the grants this call hands out (ms)
-- ARGV[6] the rate spec, ARGV[7] the quota spec (see adopt_policy in lib.lua)
--
-- Reply {granted, due, wake} (wake: as release.lua's). An older version
-- than the action's changes nothing.
if FRESH then
  return { 0, '0', '0' }
end
local granted = 0
if adopt_policy(ARGV[2], ARGV[3], ARGV[4], ARGV[6], ARGV[7]) then
  if RATE then
    RATE.sched = 0 -- tell this caller of a throttled head: the change moved its token
  end
  granted = grant_waiters(ARGV[5])
end
flush()
return { granted, str(REPORT), str(WAKE) }

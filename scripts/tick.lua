-- tick.lua: grant the head of a throttled queue when its rate token has
-- come. The process that a script told of the token's time (the wake of its
-- reply) runs this at that time, on a timer: nothing polls while the head
-- waits. Early (the local timer ran ahead of the Redis clock), it grants
-- nothing and reports the time again.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {granted, due, wake} (wake: as release.lua's; this caller keeps
-- the timer while the head stays throttled).
if FRESH then
  return { 0, '0', '0' }
end
if RATE then
  RATE.sched = 0 -- report the next token time to this caller, even if unchanged
end
settle(ARGV[2])
local granted = grant_waiters(ARGV[2])
flush()
return { granted, str(REPORT), str(WAKE) }

-- sweep.lua: one sweeper visit of one action that the sweep index named as
-- due: reclaim expired leases and unread grants, drop waiters of dead
-- processes at the head, and grant the freed slots (and the rate tokens
-- that came due).
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {reclaimed, granted, abandoned, due, wake}: due is the action's next
-- due time (0: nothing pending; a throttled head's token time counts),
-- which the sweeper puts back in the index; wake as release.lua's.
local ack_ms = ARGV[2]

local before = total('reclaimed') + total('abandoned')
redis.call('ZREMRANGEBYSCORE', K.owners, '-inf', NOW)
reclaim(true)
local reclaimed = total('reclaimed') + total('abandoned') - before
local granted, abandoned = grant_waiters(ack_ms)
local due = due_after()
if due > 0 and REPORT > 0 and REPORT < due then
  due = REPORT -- dead waiters left to skip: come back at once
end
if due > 0 then
  set('indexed_due', due)
else
  set('indexed_due', 0)
end
flush()
return { reclaimed, granted, abandoned, str(due), str(WAKE) }

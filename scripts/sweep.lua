-- sweep.lua: one sweeper visit of one action that the sweep index named as
-- due: reclaim expired leases and unacknowledged grants, drop waiters of dead
-- processes at the head, and grant the freed slots.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {reclaimed, granted, abandoned, due}: due is the action's next
-- due time (0: nothing pending), which the sweeper puts back in the index.
local ack_ms = ARGV[1]

local reclaimed = reclaim()
redis.call('ZREMRANGEBYSCORE', K.owners, '-inf', NOW)
local granted, abandoned = grant_waiters(ack_ms)
local due = next_due()
if due > 0 and REPORT > 0 and REPORT < due then
  due = REPORT -- dead waiters left to skip: come back at once
end
if due > 0 then
  redis.call('HSET', K.meta, 'indexed_due', str(due))
else
  redis.call('HDEL', K.meta, 'indexed_due')
end
return { reclaimed, granted, abandoned, str(due) }

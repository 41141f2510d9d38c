-- cancel.lua: remove a waiting execution. With a seq and owner (the waiter's
-- own process giving up) it also gives back a grant that arrived too late to
-- be used, so the slot passes on instead of leaking.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] execution ID
-- ARGV[2] seq of the waiter giving up, or "" (operator cancel: waiting only)
-- ARGV[3] owner of that waiter, or ""
-- ARGV[4] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {result, due}:
--   1  removed from the queue; its waiter is told with a "c" token
--   2  an unacknowledged grant was given back to the queue
--   0  nothing changed (not waiting, or another incarnation)
-- Idempotent: a second cancel finds nothing and returns 0.
local exec, seq, owner, ack_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local reclaimed = reclaim()
local result = 0
local w = redis.call('HGET', K.waiting, exec)
if w then
  local wseq, wowner = parse_waiting(w)
  if seq == '' or (wseq == seq and wowner == owner) then
    remove_waiter(exec, wseq, wowner, 'c', 'canceled')
    result = 1
  end
elseif seq ~= '' then
  local h = redis.call('HGET', K.holders, exec)
  if h then
    local hv = parse_holder(h)
    if hv.seq == seq and hv.owner == owner and hv.state == 'g' then
      give_back(exec, 'canceled')
      result = 2
    end
  end
end
if reclaimed > 0 or result == 2 then
  grant_waiters(ack_ms)
end
return { result, str(REPORT) }

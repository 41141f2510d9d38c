-- cancel.lua: remove a waiting execution. With a seq and owner (the waiter's
-- own process giving up) it also gives back a grant that its process has not
-- delivered, so the slot passes on instead of leaking.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] execution ID
-- ARGV[3] seq of the waiter giving up, or "" (operator cancel: waiting only)
-- ARGV[4] owner of that waiter, or ""
-- ARGV[5] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {result, due, wake} (wake: as release.lua's), result:
--   1  removed from the queue; its waiter is told with a "c" token (and, for
--      an operator's cancel, its process with "x:<id>" on its wake key)
--   2  a grant was given back; the slot went to the next waiter
--   0  nothing changed (not waiting, or another incarnation)
-- Idempotent: a second cancel finds nothing and returns 0.
local exec, seq, owner, ack_ms = ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local result = 0
local w = redis.call('HGET', K.waiting, exec)
if w then
  local wseq, wowner = parse_waiting(w)
  if seq == '' or (wseq == seq and wowner == owner) then
    remove_waiter(exec, wseq, wowner, 'c', 'canceled')
    if seq == '' then
      notify_owner(wowner, exec) -- an operator's cancel: its process may not block on this key
    end
    result = 1
  end
elseif seq ~= '' then
  local h = redis.call('HGET', K.holders, exec)
  if h then
    local hv = parse_holder(h)
    if hv.seq == seq and hv.owner == owner and hv.state == 'g' then
      give_back(exec, hv, 'canceled')
      result = 2
    end
  end
end
if result == 2 then
  grant_waiters(ack_ms)
end
settle(ack_ms)
flush()
return { result, str(REPORT), str(WAKE) }

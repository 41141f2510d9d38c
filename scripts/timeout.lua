-- timeout.lua: end a waiter whose queue timeout has passed on the Redis
-- clock. A grant its process has not delivered is given back.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] execution ID
-- ARGV[3] seq of the waiter (its enqueue time in microseconds)
-- ARGV[4] owner of the waiter
-- ARGV[5] queue timeout (ms)
-- ARGV[6] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {result, ms, due, wake} (wake: as release.lua's), result:
--   "timedout" removed (or grant given back); counted as timed_out
--   "early"    the deadline is ms away on the Redis clock; nothing changed
--   "gone"     not waiting and no grant to give back; nothing changed
-- due > 0: add the action to the sweep index at that time.
local exec, seq, owner, timeout_ms, ack_ms = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]

local result, gave_back = 'gone', false
local w = redis.call('HGET', K.waiting, exec)
if w then
  local wseq, wowner = parse_waiting(w)
  if wseq == seq and wowner == owner then
    local remaining_us = tonumber(seq) + timeout_ms * 1000 - NOW_US
    if remaining_us > 0 then
      return { 'early', str(math.ceil(remaining_us / 1000)), '0', '0' }
    end
    remove_waiter(exec, seq, owner, 't', 'timed_out')
    result = 'timedout'
  end
else
  local h = redis.call('HGET', K.holders, exec)
  if h then
    local hv = parse_holder(h)
    if hv.seq == seq and hv.owner == owner and hv.state == 'g' then
      give_back(exec, hv, 'timed_out')
      result, gave_back = 'timedout', true
    end
  end
end
if gave_back then
  grant_waiters(ack_ms)
end
settle(ack_ms)
flush()
return { result, '0', str(REPORT), str(WAKE) }

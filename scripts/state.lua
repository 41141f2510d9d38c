-- state.lua: where one execution stands. Read-only.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] execution ID
--
-- Reply:
--   {"waiting", seq, owner, position}   position 0 is the head of the queue
--   {"running", fence, owner, since_ms, deadline_ms, state}
--   {"unknown"}
local exec = ARGV[2]
local w = redis.call('HGET', K.waiting, exec)
if w then
  local wseq, wowner = parse_waiting(w)
  local pos = redis.call('LPOS', K.queue, exec)
  return { 'waiting', wseq, wowner, pos or -1 }
end
local h = redis.call('HGET', K.holders, exec)
local deadline = redis.call('ZSCORE', K.running, exec)
if h and deadline then
  local hv = parse_holder(h)
  return { 'running', hv.fence, hv.owner, hv.since, deadline, hv.state }
end
return { 'unknown' }

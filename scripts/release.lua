-- release.lua: free the slot of a running execution and hand it to the
-- oldest live waiter in the same step.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] execution ID
-- ARGV[3] fencing token the caller holds ("0": any; NotifyCompletion by ID)
-- ARGV[4] acknowledgement deadline for the grants this call hands out (ms)
-- ARGV[5] caller's policy version, ARGV[6] its resolved limit, ARGV[7] the limit's source,
-- ARGV[8] its rate spec, ARGV[9] its quota spec
--
-- Reply {held, granted, due, wake}:
--   held    1 if the execution held a slot (now freed), 0 if nothing changed
--   granted waiters admitted by this call
--   due     > 0: add the action to the sweep index at that time
--   wake    > 0: run tick.lua in wake µs (the head waits for a rate token)
--
-- Idempotent: an unknown, completed or re-granted (other fence) execution
-- changes nothing, so a count never goes negative and no other slot is freed.
local exec, fence, ack_ms = ARGV[2], ARGV[3], ARGV[4]

local changed = adopt_policy(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])

local held = 0
local h = redis.call('HGET', K.holders, exec)
if h then
  local hv = parse_holder(h)
  if fence == '0' or hv.fence == fence then
    drop_holder(exec)
    if hv.state == 'g' then
      redis.call('LREM', grant_key(hv.owner, exec), 1, grant_token(hv.seq, hv.fence))
    end
    bump('completed')
    held = 1
  end
end

local granted = 0
if held == 1 or changed then
  granted = grant_waiters(ack_ms)
end
settle(ack_ms)
flush()
return { held, granted, str(REPORT), str(WAKE) }

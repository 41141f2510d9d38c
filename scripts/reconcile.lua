-- reconcile.lua: after an error on a wait connection (a grant token may have
-- been popped by a BLPOP whose reply was lost), say where each of the
-- caller's waiters stands, so that none waits for a token that will not come.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] owner
-- ARGV[3] lease TTL (ms): a grant found here becomes a lease for this long
-- ARGV[4..] pairs of execution ID and seq of the owner's local waiters
--
-- Reply: one {status, fence} pair per waiter, in order, with status as
-- check_waiter in lib.lua: q (waiting), g (granted: now a lease), c/t/e/s
-- (removed; the token was taken), x (nowhere).
-- Idempotent: a second call finds granted waiters as leases (g) again.
local owner, lease_ms = ARGV[2], ARGV[3]
local reply = {}
for i = 4, #ARGV, 2 do
  local status, fence = check_waiter(ARGV[i], ARGV[i + 1], owner, lease_ms)
  reply[#reply + 1] = status
  reply[#reply + 1] = fence
end
flush()
return reply

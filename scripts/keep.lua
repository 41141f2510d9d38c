-- keep.lua: extend one lease by its execution ID and fencing token, from any
-- process, and hand it to whoever holds the token: the holder's owner
-- becomes "-", which no process is, so no heartbeat (renew.lua checks the
-- owner) renews it any more. It is reclaimed ttl after the last keep
-- unless released first. Executors that are not a Coordinator (the HTTP
-- API's clients) hold their leases this way.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] execution ID
-- ARGV[3] fencing token the caller holds
-- ARGV[4] the lease's new time to live from now (ms, Redis clock). Once the
--         token holds the lease (owner "-"), a later deadline already set
--         stays: keeps only extend it. (The daemon that received a grant for
--         an absent client keeps it for its acknowledgement deadline, and
--         under load that keep may land after the client's own, made through
--         another daemon with the whole TTL.)
-- ARGV[5] acknowledgement deadline for the grants this call hands out (ms)
--
-- Reply {held, deadline, due, wake} (wake: as release.lua's):
--   held     1 if the token holds the execution's slot (now extended), 0 if
--            not (unknown, released, reclaimed, expired, or another token)
--   deadline the lease's new deadline (ms), 0 when not held
--   due      > 0: add the action to the sweep index at that time
--
-- An expired lease is reclaimed first (settle), not revived: a holder that
-- stopped keeping its lease for its whole TTL has lost it, even if no script
-- had looked yet. Idempotent: a retry sets the same owner and a later deadline.
local exec, fence, ttl_ms, ack_ms = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

settle(ack_ms)

local h = redis.call('HGET', K.holders, exec)
local hv = h and parse_holder(h)
if not hv or hv.fence ~= fence then
  flush()
  return { 0, 0, str(REPORT), str(WAKE) }
end
local current = tonumber(redis.call('ZSCORE', K.running, exec) or '0')
if current <= NOW then
  -- Expired but not yet looked at (next_reclaim is only a lower bound):
  -- reclaim it now and pass the slot on.
  drop_holder(exec)
  bump('reclaimed')
  grant_waiters(ack_ms)
  flush()
  return { 0, 0, str(REPORT), str(WAKE) }
end
if hv.state == 'g' then
  redis.call('LREM', grant_key(hv.owner, exec), 1, grant_token(hv.seq, hv.fence))
end
redis.call('HSET', K.holders, exec, holder_value(hv.fence, '-', hv.since, hv.seq, 'h'))
local deadline = NOW + ttl_ms
if hv.owner == '-' then
  deadline = math.max(current, deadline)
end
redis.call('ZADD', K.running, str(deadline), exec)
lower_reclaim(deadline)
flush()
return { 1, str(deadline), str(REPORT), str(WAKE) }

-- claim_due.lua: take the actions whose sweep time has come out of the sweep
-- index, so that of many sweepers exactly one visits each.
--
-- KEYS[1] the sweep index: ZSET action ref -> due time (ms, Redis clock)
-- ARGV[1] the most actions to claim
--
-- Reply {now_ms, ref...}. A sweeper that dies after claiming loses the entry;
-- heartbeats (renew.lua) of processes with waiters on that action put it back.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local refs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #refs > 0 then
  redis.call('ZREM', KEYS[1], unpack(refs))
end
local reply = { string.format('%.0f', now) }
for _, r in ipairs(refs) do
  reply[#reply + 1] = r
end
return reply

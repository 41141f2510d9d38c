-- stats.lua: read an action's queue statistics in one consistent view.
-- Read-only.
--
-- KEYS[1..7] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] caller's policy version, ARGV[3] its resolved limit, ARGV[4] the limit's source
--
-- Reply {queue_length, active, limit, limit_source, head_seq, now_ms, totals, waits}:
-- active counts the slots held (an entry past its deadline counts until it
-- is reclaimed); head_seq is "" when the queue is empty; meta and waits are
-- flat field/value lists of those hashes. The limit is the newer of the
-- action's and the caller's policy.
local limit = str(LIMIT)
local source = redis.call('HGET', K.meta, 'limit_source') or 'default'
if tonumber(ARGV[2]) > M.policy_version then
  limit, source = ARGV[3], ARGV[4]
end
local head_seq = ''
local head = redis.call('LINDEX', K.queue, 0)
if head then
  local w = redis.call('HGET', K.waiting, head)
  if w then
    head_seq = parse_waiting(w)
  end
end
local totals = {}
for _, f in ipairs({ 'enqueued', 'admitted', 'completed', 'timed_out', 'canceled', 'rejected', 'reclaimed', 'abandoned' }) do
  totals[#totals + 1] = f
  totals[#totals + 1] = str(M[f])
end
return {
  redis.call('LLEN', K.queue), redis.call('ZCARD', K.running), tonumber(limit), source, head_seq, str(NOW),
  totals, redis.call('HGETALL', K.waits),
}

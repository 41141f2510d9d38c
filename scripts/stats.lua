-- stats.lua: read an action's queue statistics in one consistent view.
-- Read-only.
--
-- KEYS[1..7] the action's keys (see lib.lua)
-- ARGV[1] caller's policy version, ARGV[2] its resolved limit, ARGV[3] the limit's source
--
-- Reply {queue_length, active, limit, limit_source, head_seq, now_ms, meta, waits}:
-- head_seq is "" when the queue is empty; meta and waits are flat
-- field/value lists of those hashes. The limit is the newer of the action's
-- and the caller's policy.
local limit = redis.call('HGET', K.meta, 'limit') or '-1'
local source = redis.call('HGET', K.meta, 'limit_source') or 'default'
local version = tonumber(redis.call('HGET', K.meta, 'policy_version') or '-1')
if tonumber(ARGV[1]) > version then
  limit, source = ARGV[2], ARGV[3]
end
local head_seq = ''
local head = redis.call('LINDEX', K.queue, 0)
if head then
  local w = redis.call('HGET', K.waiting, head)
  if w then
    head_seq = parse_waiting(w)
  end
end
return {
  redis.call('LLEN', K.queue), active(), tonumber(limit), source, head_seq, str(NOW),
  redis.call('HGETALL', K.meta), redis.call('HGETALL', K.waits),
}

-- stats.lua: read an action's queue statistics in one consistent view.
-- Read-only.
--
-- KEYS[1..8] the action's keys, ARGV[1] its base (see lib.lua)
-- ARGV[2] caller's policy version, ARGV[3] its resolved limit, ARGV[4] the limit's source,
-- ARGV[5] its rate spec, ARGV[6] its quota spec (see adopt_policy in lib.lua)
--
-- Reply {queue_length, active, limit, limit_source, head_seq, now_ms, totals, waits,
--        rate, throttled_until, quota, quota_used, quota_reset}:
-- active counts the slots held (an entry past its deadline counts until it
-- is reclaimed); head_seq is "" when the queue is empty; totals and waits
-- are flat field/value lists. The limit, rate and quota are the newer of the
-- action's and the caller's policy: rate is "<limit>,<per_us>,<burst>,<source>"
-- and quota "<limit>,<window_ms>,<source>", or "" for none. throttled_until
-- is the µs time the head gets its rate token ("0": not throttled);
-- quota_used counts the reservations of the current window, which ends at
-- quota_reset (ms; "0" without a quota).
local limit = str(LIMIT)
local source = redis.call('HGET', K.meta, 'limit_source') or 'default'
local rate, quota = '', ''
local srcs = redis.call('HMGET', K.meta, 'rate_source', 'quota_source')
if RATE then
  rate = string.format('%d,%d,%d,', RATE.limit, RATE.per, RATE.burst) .. (srcs[1] or 'default')
end
if QUOTA then
  quota = string.format('%d,%d,', QUOTA.limit, QUOTA.win) .. (srcs[2] or 'default')
end
if tonumber(ARGV[2]) > M.policy_version then
  limit, source, rate, quota = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  RATE = next_rate(ARGV[5]) -- in this call's memory only: nothing is written
  QUOTA = next_quota(ARGV[6])
end
local head_seq = ''
local head = redis.call('LINDEX', K.queue, 0)
if head then
  local w = redis.call('HGET', K.waiting, head)
  if w then
    head_seq = parse_waiting(w)
  end
end
local throttled_until = '0'
if head then
  local at = token_at()
  if at > 0 and at < NEVER_US then
    throttled_until = str(at)
  end
end
local used, reset = 0, '0'
if QUOTA then
  local n, _, stop = quota_used()
  used, reset = n, str(stop)
end
local totals = {}
for i, f in ipairs(TOTALS) do
  totals[#totals + 1] = f
  totals[#totals + 1] = T[i]
end
for _, f in ipairs({ 'throttled', 'quota_rejected' }) do
  totals[#totals + 1] = f
  totals[#totals + 1] = str(M[f])
end
return {
  redis.call('LLEN', K.queue), redis.call('ZCARD', K.running), tonumber(limit), source, head_seq, str(NOW),
  totals, redis.call('HGETALL', K.waits), rate, throttled_until, quota, used, reset,
}

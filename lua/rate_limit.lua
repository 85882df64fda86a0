-- rate_limit.lua: count one request against several fixed-window limits at once (SPEC §3).
--
-- KEYS:
--   [1..n] rate:{scope}:{client} counters (see ftl/store/keys.py), one per limit that applies.
-- ARGV:
--   [1] the window in milliseconds (each counter expires one window after its first hit).
--   [2..n+1] the limit of KEYS[i] (requests per window), in the same order.
-- Returns: {1, 0} allowed; {0, retry_after_ms} refused: some counter is over its limit, and
--   retry_after_ms is the longest wait until every such counter resets. Every counter counts the
--   request either way, so hammering while refused does not shorten the wait.
-- Errors: a counter key holding something else than a count, before the first write.
local window = tonumber(ARGV[1])
local wait = -1
-- NOTE: no partial writes: every counter is read before the first INCR (GET fails on a key of
-- another type; a value that is not a count is refused), so no request is half counted.
for _, key in ipairs(KEYS) do
  local count = redis.call('GET', key)
  if count and not string.match(count, '^%d+$') then
    return redis.error_reply('rate_limit: ' .. key .. ' does not hold a count')
  end
end
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then
    redis.call('PEXPIRE', key, window)
  end
  if count > tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      ttl = window
    end
    if ttl > wait then
      wait = ttl
    end
  end
end
if wait >= 0 then
  return {0, wait}
end
return {1, 0}

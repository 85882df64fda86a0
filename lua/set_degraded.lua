-- set_degraded.lua: set or clear the `degraded` flag of instruments held in hot state.
--
-- KEYS: instrument:{id} hashes (ftl/instruments.py), one per instrument.
-- ARGV: [1] "1" to flag degraded (the Sportmonks breaker is open), "0" to clear it.
-- Returns: how many hashes were changed.
-- Errors: none. NOTE: a key Redis does not hold is skipped, never created: a hash holding only
-- `degraded` would be a broken instrument.
local changed = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('HGET', key, 'degraded') ~= ARGV[1] then
    redis.call('HSET', key, 'degraded', ARGV[1])
    changed = changed + 1
  end
end
return changed

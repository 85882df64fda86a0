-- set_degraded.lua: set or clear the `degraded` flag of instruments held in hot state, and emit a
-- tick (same price, source live) for each one that changed, so every subscriber sees `d` flip at
-- once instead of at the next price move (there is none while the feed is down).
--
-- KEYS: instrument:{id} hashes (ftl/instruments.py), one per instrument
--       (and the keys lua/lib/engine.lua derives from ids).
-- ARGV: [1] "1" to flag degraded (the Sportmonks breaker is open), "0" to clear it.
-- Returns: how many hashes were changed.
-- Errors: none. NOTE: a key Redis does not hold is skipped, never created: a hash holding only
-- `degraded` would be a broken instrument.
--! include engine.lua
local changed, now = 0, E.now_ms()
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('HGET', key, 'degraded') ~= ARGV[1] then
    redis.call('HSET', key, 'degraded', ARGV[1])
    E.tick(redis.call('HGET', key, 'id'), 0, now)
    changed = changed + 1
  end
end
return changed

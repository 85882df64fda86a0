-- set_degraded.lua: set or clear the `degraded` flag of instruments held in hot state, and emit a
-- tick (same price, source live) for each one that changed, so every subscriber sees `d` flip at
-- once instead of at the next price move (there is none while the feed is down).
--
-- KEYS: instrument:{id} hashes (ftl/market/instruments.py), one per instrument
--       (and the keys lua/lib/engine.lua derives from ids).
-- ARGV: [1] "1" to flag degraded (the Sportmonks breaker is open), "0" to clear it.
-- Returns: how many hashes were changed.
-- Errors: none. NOTE: a key Redis does not hold is skipped, never created: a hash holding only
-- `degraded` would be a broken instrument; so is a hash that is not a whole instrument, found
-- before the first write.
--! include engine.lua
local changed, now = 0, E.now_ms()
-- NOTE: no partial writes: every hash is read (and a broken one skipped) before the first write.
local flip = {}
for _, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'id', 'degraded')
  if f[1] and f[2] ~= ARGV[1] and E.instrument(f[1]) then flip[#flip + 1] = {key, f[1]} end
end
for _, pair in ipairs(flip) do
  redis.call('HSET', pair[1], 'degraded', ARGV[1])
  E.changed(pair[2])
  E.tick(pair[2], 0, now)
  changed = changed + 1
end
return changed

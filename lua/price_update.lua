-- price_update.lua: a new live base price (and, after full time, a new base price), or a new
-- kMod (an admin's), for one instrument: the tick with its source, then every SL/TP that tick
-- reaches is closed along the curve (lua/lib/engine.lua).
--
-- KEYS: [1] instrument:{instrumentId}  (and the keys lua/lib/engine.lua derives from ids).
-- ARGV: [1] instrumentId  [2] liveBasePriceCents or '' (unchanged)  [3] basePriceCents or ''
--       [4] tick source (ftl.store.ticks.TickSource)  [5] kModMicros or '' (unchanged; optional).
-- Returns: {1, '<tick JSON>'} (the price tick, before any SL/TP closes it caused).
-- Errors: codes not_found (instrument not in hot state), before any write. A level whose
--       owner's wallet is not in hot state is left for a later tick (lua/lib/engine.lua).
--! include engine.lua
local iid, live, base, source = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

-- NOTE: no partial writes: a hash without an instrument's fields is refused before any write.
if not E.instrument(iid) then return E.refuse('not_found', {instrumentId = iid}) end
if live ~= '' then redis.call('HSET', KEYS[1], 'liveBasePriceCents', live) end
if ARGV[5] and ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'kModMicros', ARGV[5]) end
E.changed(iid)
if base ~= '' then
  redis.call('HSET', KEYS[1], 'basePriceCents', base)
  redis.call('XADD', E.OUTBOX, '*', 'instrument', iid)
end
local now = E.now_ms()
local tick = E.tick(iid, source, now)
E.settle(tick, now)
return {1, tick.json}

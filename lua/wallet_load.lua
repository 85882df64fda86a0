-- wallet_load.lua: put a user's wallet and open positions into hot state from Postgres rows,
-- unless the wallet is already there (hot state is newer than Postgres until the flusher ran).
--
-- KEYS: [1] wallet:{userId}  [2] positions:{userId}  [3] exposure:{userId}
--       (and position:{id}, stops:below|above:{instrumentId} of each position).
-- ARGV: [1] userId  [2] wallet fields JSON (name -> string)
--       [3] open positions JSON: [{"id": ..., "fields": {name -> string}}, ...].
-- Returns: 1 when loaded, 0 when the wallet was already in hot state (nothing written).
-- Errors: none.
--! include engine.lua
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local uid = ARGV[1]
local wallet = cjson.decode(ARGV[2])
for name, value in pairs(wallet) do redis.call('HSET', KEYS[1], name, value) end
redis.call('DEL', KEYS[2], KEYS[3])
for _, row in ipairs(cjson.decode(ARGV[3])) do
  local pk, f = E.k_position(row.id), row.fields
  for name, value in pairs(f) do redis.call('HSET', pk, name, value) end
  redis.call('SADD', KEYS[2], row.id)
  local dir, lots = tonumber(f.direction), tonumber(f.lotsCentis)
  E.add_exposure(uid, f.instrumentId, dir * lots, dir * lots * tonumber(f.entryCents))
  if f.stopLossCents then
    redis.call('ZADD', dir == 1 and E.k_below(f.instrumentId) or E.k_above(f.instrumentId),
      f.stopLossCents, row.id)
  end
  if f.takeProfitCents then
    redis.call('ZADD', dir == 1 and E.k_above(f.instrumentId) or E.k_below(f.instrumentId),
      f.takeProfitCents, row.id)
  end
end
return 1

-- wallet_load.lua: put a user's wallet and open positions into hot state from Postgres rows,
-- unless the wallet is already there (hot state is newer than Postgres until the flusher ran).
--
-- KEYS: [1] wallet:{userId}  [2] positions:{userId}  [3] exposure:{userId}  [4] held:{userId}
--       (and position:{id}, stops:below|above:{instrumentId}, holders:{instrumentId} of each
--       position).
-- ARGV: [1] userId  [2] wallet fields JSON (name -> string)
--       [3] open positions JSON: [{"id": ..., "fields": {name -> string}}, ...].
-- Returns: 1 when loaded, 0 when the wallet was already in hot state (nothing written).
-- Errors: a malformed document or position row, before the first write.
--! include engine.lua
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end

local function flat(fields)
  local list = {}
  for name, value in pairs(fields) do
    list[#list + 1] = name
    list[#list + 1] = value
  end
  return list
end

local uid = ARGV[1]
-- NOTE: no partial writes: both documents decoded and every row checked before the first write.
local wallet, rows = flat(cjson.decode(ARGV[2])), cjson.decode(ARGV[3])
if #wallet == 0 then return redis.error_reply('wallet_load: no wallet fields') end
for _, row in ipairs(rows) do
  local f = type(row) == 'table' and type(row.fields) == 'table' and row.fields
  if not (f and row.id and f.instrumentId and tonumber(f.direction) and tonumber(f.lotsCentis)
      and tonumber(f.entryCents)) then
    return redis.error_reply('wallet_load: malformed position row')
  end
end
redis.call('HSET', KEYS[1], unpack(wallet))
redis.call('SADD', E.UNBOXED, uid)  -- a margin pass evaluates him (docs/decisions/0166)
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
local cost = 0
for _, row in ipairs(rows) do
  local f = row.fields
  redis.call('HSET', E.k_position(row.id), unpack(flat(f)))
  redis.call('SADD', KEYS[2], row.id)
  local dir, lots = tonumber(f.direction), tonumber(f.lotsCentis)
  E.add_exposure(uid, f.instrumentId, dir * lots, true)
  cost = cost + dir * lots * tonumber(f.entryCents)
  if f.stopLossCents then
    redis.call('ZADD', dir == 1 and E.k_below(f.instrumentId) or E.k_above(f.instrumentId),
      f.stopLossCents, row.id)
  end
  if f.takeProfitCents then
    redis.call('ZADD', dir == 1 and E.k_above(f.instrumentId) or E.k_below(f.instrumentId),
      f.takeProfitCents, row.id)
  end
end
-- NOTE: costCents = Σ entry × lots × direction of the open positions (lua/lib/engine.lua).
redis.call('HSET', KEYS[1], 'costCents', E.int(cost))
return 1

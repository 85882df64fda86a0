-- margin_snapshot.lua: one consistent read of what a user's margin replay starts from (SPEC §1.5):
-- the Redis clock (the replay's cut), the balance, the watermark and every open position, read in
-- one script so no trade can fall between them. Writes nothing.
--
-- KEYS: [1] wallet:{userId}  [2] positions:{userId}  [3] margin:watermark:{userId}
-- ARGV: none.
-- Returns: {nowMs, balanceCents or false (wallet not in hot state), watermark hash as a flat
--       field/value list, {positionId, instrumentId, direction, lotsCentis, entryCents,
--       marginCents, openSeq} per open position}.
-- Errors: none.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local balance = redis.call('HGET', KEYS[1], 'balanceCents')
local positions = {}
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local f = redis.call('HMGET', 'position:' .. pid, 'instrumentId', 'direction', 'lotsCentis',
    'entryCents', 'marginCents', 'openSeq', 'status')
  if f[7] == 'open' then
    positions[#positions + 1] = {pid, f[1], f[2], f[3], f[4], f[5], f[6]}
  end
end
return {string.format('%d', now), balance, redis.call('HGETALL', KEYS[3]), positions}

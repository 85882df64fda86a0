-- margin_snapshot.lua: one consistent read of what the margin replays of some users start from
-- (SPEC §1.5): the Redis clock (the replays' cut) and, per user, the balance, the watermark and
-- every open position, read in one script so no trade can fall between them. Writes nothing.
--
-- KEYS: per user, in order: wallet:{userId}, positions:{userId}, margin:watermark:{userId}.
-- ARGV: [1] a budget of positions (optional): the script stops after the user whose positions
--       bring those read to it, so one call holds Redis for a bounded time (trades wait behind
--       it); the caller asks again for the users after.
-- Returns: {nowMs, {balanceCents or false (wallet not in hot state), watermark hash as a flat
--       field/value list, {positionId, instrumentId, direction, lotsCentis, entryCents,
--       marginCents, openSeq} per open position, the wallet's fingerprint} per user read, in the
--       order of KEYS (the first users of KEYS, at least one)}. The fingerprint `version:balanceCents:usedMarginCents:openCount` changes with
--       every write to the wallet (a safe box is valid only for the state it was made from:
--       lua/margin_boxes.lua builds the same string).
-- Errors: none.
-- PERF: one call reads a whole chunk of an evaluation pass (evaluator.SNAPSHOT_CHUNK_USERS).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local users = {}
local budget = tonumber(ARGV[1]) or math.huge
local read = 0
for k = 1, #KEYS, 3 do
  local w = redis.call('HMGET', KEYS[k], 'version', 'balanceCents', 'usedMarginCents', 'openCount')
  local balance = w[2]
  local positions = {}
  for _, pid in ipairs(redis.call('SMEMBERS', KEYS[k + 1])) do
    local f = redis.call('HMGET', 'position:' .. pid, 'instrumentId', 'direction', 'lotsCentis',
      'entryCents', 'marginCents', 'openSeq', 'status')
    if f[7] == 'open' then
      positions[#positions + 1] = {pid, f[1], f[2], f[3], f[4], f[5], f[6]}
    end
  end
  local fingerprint = table.concat({w[1] or '', w[2] or '', w[3] or '', w[4] or ''}, ':')
  users[#users + 1] = {balance, redis.call('HGETALL', KEYS[k + 2]), positions, fingerprint}
  read = read + #positions
  if read >= budget then break end
end
return {string.format('%d', now), users}

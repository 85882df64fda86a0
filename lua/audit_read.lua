-- audit_read.lua: the hot state `ftl audit` compares with Postgres (ftl/ops/audit.py), read for a
-- batch of users or positions in one call. Writes nothing.
-- PERF: one call per batch instead of one or two commands per user or position.
--
-- KEYS: ARGV[1] 'wallets': wallet:{userId}, positions:{userId}, held:{userId} per user, in
--       threes; ARGV[1] 'positions': position:{positionId} per position.
-- ARGV: [1] 'wallets' | 'positions'.
-- Returns: 'wallets': per user, in order, {balanceCents, realizedCents, bonusCents, {open
--       position ids}, held as a flat field/value list} (the three fields nil when the wallet
--       is not in hot state); 'positions': per position, in order, {userId, status,
--       instrumentId} (nil when the hash is gone).
-- Errors: none.
local out = {}
if ARGV[1] == 'wallets' then
  for k = 1, #KEYS, 3 do
    local w = redis.call('HMGET', KEYS[k], 'balanceCents', 'realizedCents', 'bonusCents')
    out[#out + 1] = {w[1], w[2], w[3], redis.call('SMEMBERS', KEYS[k + 1]),
      redis.call('HGETALL', KEYS[k + 2])}
  end
else
  for k = 1, #KEYS do
    out[#out + 1] = redis.call('HMGET', KEYS[k], 'userId', 'status', 'instrumentId')
  end
end
return out

-- ws_admit.lua: admit one WebSocket connection of a user against the per-user cap that holds
-- across every `ws` replica (SPEC §7), spending the single-use ws token in the same step.
--
-- KEYS:
--   [1] ws_connections:{userId}, sorted set: member = connection id, score = Redis time (ms)
--       its lease runs out (see ftl/store/keys.py). A crashed replica's entries lapse on their own.
--   [2] ws_token_spent:{jti}, set when the token opens a connection (one use only).
-- ARGV:
--   [1] the connection id (unique across replicas), [2] the cap (connections per user),
--   [3] the lease in milliseconds, [4] the token's expiry (Unix seconds) for KEYS[2].
-- Returns: 1 admitted (the entry is written and the token spent), 0 the token was already spent,
--   -1 the user already holds the cap of live connections (the token stays unspent).
-- Errors: none.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return -1
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('SET', KEYS[2], '1', 'EXAT', tonumber(ARGV[4]) + 1)
return 1

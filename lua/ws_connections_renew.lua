-- ws_connections_renew.lua: renew the leases of one replica's open connections, so they keep
-- counting against their users' caps while a crashed replica's entries lapse (SPEC §7).
--
-- KEYS:
--   [1..n] ws_connections:{userId} of each connection (see ftl/store/keys.py), one per connection.
-- ARGV:
--   [1] the lease in milliseconds, [2..n+1] the connection id of KEYS[i], in the same order.
-- Returns: the number of entries renewed (an entry already gone is not brought back).
-- Errors: none.
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
local renewed = 0
for i, key in ipairs(KEYS) do
  renewed = renewed + redis.call('ZADD', key, 'XX', 'CH', until_ms, ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return renewed

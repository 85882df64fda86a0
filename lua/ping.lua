-- ping.lua: health probe of the script path (EVALSHA reaches Redis and the scripts are loaded).
--
-- KEYS: none.
-- ARGV: none.
-- Returns: {"PONG", <redis server time in epoch milliseconds>}.
-- Errors: none.
local now = redis.call('TIME')
return {'PONG', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}

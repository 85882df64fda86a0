-- refresh_rotate.lua: rotate a session family's refresh token, detecting reuse (SPEC §3.1).
--
-- KEYS:
--   [1] refresh_family:{family} (string: the jti of the family's one live refresh token).
-- ARGV:
--   [1] the jti of the refresh token presented.
--   [2] the jti of the refresh token that replaces it.
--   [3] the family's new time to live, in milliseconds (the refresh token lifetime).
-- Returns: 1 rotated; 0 the presented token was already replaced (reuse: the family is deleted,
--   so every refresh token of it is dead); -1 the family has ended (logout, reuse, expiry).
-- Errors: none.
local live = redis.call('GET', KEYS[1])
if not live then
  return -1
end
if live ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1

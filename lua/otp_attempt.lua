-- otp_attempt.lua: spend one attempt at a registration code, atomically (SPEC §3.1: 5 tries).
--
-- KEYS:
--   [1] otp:{ticketJti} (hash: hash, attemptsLeft, verified; see ftl/store/keys.py).
-- ARGV: none.
-- Returns: {-1, ""} no live code (expired, or the ticket died); {-2, ""} already verified;
--   otherwise {attemptsLeft after this attempt, stored hash}. The caller compares the hash in
--   constant time (Lua string comparison is not) and on a match sets verified = 1.
-- Errors: none.
local fields = redis.call('HMGET', KEYS[1], 'hash', 'attemptsLeft', 'verified')
if not fields[1] then
  return {-1, ''}
end
if fields[3] == '1' then
  return {-2, ''}
end
local left = tonumber(fields[2]) - 1
if left < 0 then
  return {-1, ''}
end
redis.call('HSET', KEYS[1], 'attemptsLeft', left)
return {left, fields[1]}

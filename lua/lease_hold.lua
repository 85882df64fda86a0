-- lease_hold.lua: take a lease, or extend it when the caller already holds it, in one step, so a
-- lease that expires between a check and an extend can never end up extended for someone else.
--
-- KEYS: [1] the lease key (lease:{name}).
-- ARGV: [1] the caller's token (unique per process), [2] time to live in milliseconds.
-- Returns: 1 when the caller holds the lease for the next ARGV[2] ms, 0 when another holder does.
-- Errors: none.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0

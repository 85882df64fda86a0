-- lease_release.lua: give a lease back only if the caller still holds it (after an expiry another
-- process may hold it now, and deleting that would let a third one in beside it).
--
-- KEYS: [1] the lease key (lease:{name}).
-- ARGV: [1] the caller's token.
-- Returns: 1 when the caller's lease was deleted, 0 otherwise.
-- Errors: none.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0

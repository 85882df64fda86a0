-- hashes_replace.lua: replace whole hashes, many per call (`ftl recover` writes tens of
-- thousands of margin watermarks; one call per thousand costs far less than a command each).
--
-- KEYS: none: the hash names are in ARGV (recover runs with no other writer).
-- ARGV: [1] JSON [[key, field, value, field, value, ...], ...] (strings).
-- Returns: the number of hashes written.
-- Errors: none.
local rows = cjson.decode(ARGV[1])
for _, row in ipairs(rows) do
  local key = table.remove(row, 1)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(row))
end
return #rows

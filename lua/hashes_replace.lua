-- hashes_replace.lua: replace whole hashes, many per call (`ftl recover` writes tens of
-- thousands of margin watermarks; one call per thousand costs far less than a command each).
--
-- KEYS: none: the hash names are in ARGV (recover runs with no other writer).
-- ARGV: [1] JSON [[key, field, value, field, value, ...], ...] (strings).
-- Returns: the number of hashes written.
-- Errors: a row that is not [key, field, value, ...], before the first write.
local rows = cjson.decode(ARGV[1])
-- NOTE: no partial writes: every row is checked before the first DEL.
for _, row in ipairs(rows) do
  if type(row) ~= 'table' or #row < 3 or #row % 2 == 0 then
    return redis.error_reply('hashes_replace: a row is not [key, field, value, ...]')
  end
end
for _, row in ipairs(rows) do
  local key = table.remove(row, 1)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(row))
end
return #rows

-- margin_crossed.lua: judge new ticks against the index of safe-box bounds (docs/decisions/0166):
-- the holders whose box some tick may have strained join margin:unboxed, and each instrument's
-- margin:checked moves on to the last tick judged.
--
-- KEYS: none: it derives them from ids (the names match ftl/store/keys.py): margin:checked:{instrumentId}
-- (every box indexed on it was judged against every tick up to this seq), margin:floor: and
-- margin:ceiling:{instrumentId} zsets (user -> the lowest / highest price his box allows there),
-- margin:since:{instrumentId} zset (user -> his box's seq there), margin:unboxed set.
-- ARGV: [1] BOX_MAX_TICKS (a box older than this on one instrument lapses: a replay moves the
--       user's watermark), then per instrument: instrumentId, from ('' when margin:checked was
--       unset), to, lowest, highest: the caller read every tick with from < seq <= to, whose
--       prices span [lowest, highest] ('' for both when it could not read them all).
-- Returns: the users that joined margin:unboxed, each once.
-- Errors: none.
-- NOTE: a caller whose `from` is older than margin:checked judged a longer window than needed,
-- which is safe; one whose `from` is newer (margin:checked was reset meanwhile) did not judge
-- every tick, so every box on the instrument asks for a check.
local max_ticks = tonumber(ARGV[1])
local found, seen = {}, {}
local function mark(users)
  for _, uid in ipairs(users) do
    if not seen[uid] then
      seen[uid] = true
      found[#found + 1] = uid
    end
  end
end
for k = 2, #ARGV, 5 do
  local iid, from, to = ARGV[k], tonumber(ARGV[k + 1]), tonumber(ARGV[k + 2])
  local lowest, highest = ARGV[k + 3], ARGV[k + 4]
  local checked = 'margin:checked:' .. iid
  local at = tonumber(redis.call('GET', checked))
  if at and at < to then
    if from == nil or at < from or lowest == '' then
      mark(redis.call('ZRANGE', 'margin:since:' .. iid, 0, -1))
    else
      mark(redis.call('ZRANGEBYSCORE', 'margin:floor:' .. iid, '(' .. lowest, '+inf'))
      mark(redis.call('ZRANGEBYSCORE', 'margin:ceiling:' .. iid, '-inf', '(' .. highest))
      mark(redis.call('ZRANGEBYSCORE', 'margin:since:' .. iid, '-inf',
        '(' .. string.format('%d', to - max_ticks)))
    end
  end
  -- NOTE: unset, nobody is indexed on it yet (lua/margin_boxes_save.lua sets it first).
  if at == nil or at < to then redis.call('SET', checked, string.format('%d', to)) end
end
for first = 1, #found, 1000 do
  redis.call('SADD', 'margin:unboxed', unpack(found, first, math.min(first + 999, #found)))
end
return found

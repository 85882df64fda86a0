-- margin_boxes_save.lua: store the safe boxes some margin evaluations left and index their bounds
-- (docs/decisions/0046, 0166), each only if it still speaks for the user: his wallet is the one
-- it was made for, and no tick after the box's seqs was judged against the index without it.
--
-- KEYS: none: it derives them from ids (the names match ftl/store/keys.py): wallet:{userId},
-- margin:box:{userId} (the box's text, "fingerprint|below:slack:headroom|instrumentId=seq:
-- priceCents:netLotsCentis;..."), margin:checked:{instrumentId}, margin:floor:,
-- margin:ceiling:, margin:since:{instrumentId} (see lua/margin_crossed.lua), margin:unboxed.
-- ARGV: per user: userId, the box's text ('' when he holds nothing: his box and index entries go),
--       n, then n × (instrumentId, the box's seq there, floor, ceiling) ('' for no bound).
-- Returns: how many boxes were stored.
-- Errors: none.
-- NOTE: a user refused here stays in margin:unboxed (a trade put him there, or he was never
-- taken out): the next pass evaluates him again.
local saved = 0

-- Take the user out of the index of every instrument of his old box not in `keep`.
local function unindex(uid, old, keep)
  if not old then return end
  local held = string.match(old, '^[^|]*|[^|]*|(.*)$') or ''
  for iid in string.gmatch(held, '([^;=]+)=') do
    if not keep[iid] then
      redis.call('ZREM', 'margin:floor:' .. iid, uid)
      redis.call('ZREM', 'margin:ceiling:' .. iid, uid)
      redis.call('ZREM', 'margin:since:' .. iid, uid)
    end
  end
end

local function bound(name, iid, price, uid)
  if price == '' then
    redis.call('ZREM', name .. iid, uid)
  else
    redis.call('ZADD', name .. iid, price, uid)
  end
end

local k = 1
while k <= #ARGV do
  local uid, text, n = ARGV[k], ARGV[k + 1], tonumber(ARGV[k + 2])
  local first, last = k + 3, k + 2 + 4 * n
  k = last + 1
  local box = 'margin:box:' .. uid
  local w = redis.call('HMGET', 'wallet:' .. uid, 'version', 'balanceCents', 'usedMarginCents',
    'openCount')
  if text == '' then
    if not w[2] or (tonumber(w[4]) or 0) == 0 then
      unindex(uid, redis.call('GET', box), {})
      redis.call('DEL', box)
      redis.call('SREM', 'margin:unboxed', uid)
    end
  elseif w[2] then
    local fingerprint = table.concat({w[1] or '', w[2], w[3] or '', w[4] or ''}, ':')
    local valid = string.sub(text, 1, #fingerprint + 1) == fingerprint .. '|'
    for j = first, last, 4 do
      local at = valid and tonumber(redis.call('GET', 'margin:checked:' .. ARGV[j]))
      if at and at > tonumber(ARGV[j + 1]) then valid = false end
    end
    if valid then
      local keep = {}
      for j = first, last, 4 do keep[ARGV[j]] = true end
      unindex(uid, redis.call('GET', box), keep)
      redis.call('SET', box, text)
      for j = first, last, 4 do
        local iid, seq = ARGV[j], ARGV[j + 1]
        redis.call('SET', 'margin:checked:' .. iid, seq, 'NX')
        redis.call('ZADD', 'margin:since:' .. iid, seq, uid)
        bound('margin:floor:', iid, ARGV[j + 2], uid)
        bound('margin:ceiling:', iid, ARGV[j + 3], uid)
      end
      redis.call('SREM', 'margin:unboxed', uid)
      saved = saved + 1
    end
  end
end
return saved

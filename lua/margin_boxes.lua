-- margin_boxes.lua: the safe boxes of some users that are still valid (docs/decisions/0046): a
-- box says how far prices may move from where the user's margin replay ended before it could
-- raise an event, and is valid only while his wallet is unchanged since it was made
-- (fingerprint as in lua/margin_snapshot.lua; every trade, close and payout bumps the wallet's
-- version). Writes nothing.
--
-- KEYS: per user, in order: wallet:{userId}, margin:box:{userId} (a string
--       "fingerprint|below:slack:headroom|instrumentId=seq:priceCents:netLotsCentis;...",
--       written whole by ftl/trading/margin/safe_boxes.py).
-- ARGV: none.
-- Returns: per user, in the order of KEYS, the box after its fingerprint (after the first "|"),
--       or "" when there is no box, no wallet, or the wallet changed since the box was made.
-- Errors: none.
-- PERF: one call checks a chunk of holders (safe_boxes.BOX_CHUNK_USERS) for the price of one
-- HMGET and one GET each, instead of a snapshot and a replay each.
local out = {}
for k = 1, #KEYS, 2 do
  local found = ''
  local w = redis.call('HMGET', KEYS[k], 'version', 'balanceCents', 'usedMarginCents', 'openCount')
  local box = w[2] and redis.call('GET', KEYS[k + 1])
  if box then
    local fingerprint = table.concat({w[1] or '', w[2], w[3] or '', w[4] or ''}, ':')
    local bar = string.find(box, '|', 1, true)
    if bar and string.sub(box, 1, bar - 1) == fingerprint then found = string.sub(box, bar + 1) end
  end
  out[#out + 1] = found
end
return out

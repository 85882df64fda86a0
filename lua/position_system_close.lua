-- position_system_close.lua: system closes at GIVEN prices with a reason, `washout` (the margin
-- replay, SPEC §1.5: its fill walks the curve from the breach tick) or `auto_exit_ft` (full time,
-- SPEC §1.7: the snapshot's unwind price, rounded against each trader). The caller computed them
-- (ftl/trading/margin/replay.py, ftl/trading/fulltime.py) so that replaying late gives the same prices. Each
-- close: PnL to the balance, margin released, netLots, trade tick, board, outbox, portfolio frame,
-- then (washouts only) the SL/TP cascade. A position that is not open any more is skipped, so a rerun or a
-- concurrent run closes nothing twice. For the margin replay the same call also records the
-- warnings and washouts (margin_outbox stream, frames) and moves the user's watermark, all or
-- nothing, and only if the watermark is still the one the replay started from.
--
-- KEYS: [1] margin:watermark:{userId} (margin runs; any placeholder key for full time)
--       (and the keys lua/lib/engine.lua derives from ids).
-- ARGV: [1] reason: washout | auto_exit_ft  [2] plan JSON:
--       {"closes": [{"p": positionId, "x": exitCents, "n": pnlCents, "i": breach instrumentId,
--                    "q": breach seq, "t": breach atMs, "e": equityCents, "l": level basis}],
--        and for margin runs "userId", "expect" (watermark version read by the replay),
--        "warnings": [{"i", "q", "t", "x": priceCents, "e", "l"}],
--        "watermark": {"seqs": {instrumentId: seq}, "below": 0 | 1}}
-- Returns: {1, number of positions closed}; {0, code, details JSON} when refused (nothing written).
-- Errors: stale (the watermark moved since the replay read it: replay again),
--       not_found (a position of another user in a margin plan, or its instrument not in hot
--       state), wallet_missing (an owner's wallet not in hot state: load it and call again).
--       Every refusal comes before the first write.
--! include engine.lua
local reason, plan = ARGV[1], cjson.decode(ARGV[2])
local uid = plan.userId

if uid then
  local version = redis.call('HGET', KEYS[1], 'v') or '0'
  if version ~= plan.expect then return E.refuse('stale', {version = version}) end
end
-- NOTE: no partial writes: every key a close will touch is checked before the first write.
for _, c in ipairs(plan.closes) do
  local p = E.position(c.p)
  if p and uid and p.userId ~= uid then return E.refuse('not_found', {positionId = c.p}) end
  if p and p.status == 'open' then
    if redis.call('EXISTS', E.k_wallet(p.userId)) == 0 then
      return E.refuse('wallet_missing', {userId = p.userId})
    end
    if not E.instrument(p.instrumentId) then
      return E.refuse('not_found', {instrumentId = p.instrumentId})
    end
  end
end

local now = E.now_ms()
local closed = 0
local function event(kind, x, pid)
  local fields = {userId = uid, kind = kind, instrumentId = x.i, seq = x.q, atMs = x.t,
    priceCents = x.x, pnlCents = x.n, equityCents = x.e, levelBasis = x.l, positionId = pid}
  redis.call('XADD', 'margin_outbox', '*', 'event', cjson.encode(fields))
end

if uid then
  for _, w in ipairs(plan.warnings) do
    event('warning', w, nil)
    E.frame(uid, 'margin_warning', cjson.encode({wallet = E.wallet_view(uid)}))
  end
end
for _, c in ipairs(plan.closes) do
  local p = E.position(c.p)
  if p and p.status == 'open' then
    local tick = E.close(p, tonumber(c.x), reason, now, '')
    closed = closed + 1
    -- NOTE: at full time every position of the frozen instrument is in the plan at the unwind
    -- price; a level its trade tick reaches must not close one at another price first.
    if reason ~= 'auto_exit_ft' then E.settle(tick, now) end
    local event_name = 'position_closed'
    if uid then
      event_name = 'washout'
      event('washout', c, c.p)
    end
    E.frame(p.userId, event_name, E.body(c.p, p.userId))
  end
end
if uid then
  local version = tonumber(plan.expect) + 1
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', E.int(version), 'below', E.int(plan.watermark.below))
  for iid, seq in pairs(plan.watermark.seqs) do
    redis.call('HSET', KEYS[1], iid, E.int(seq))
  end
end
return {1, closed}

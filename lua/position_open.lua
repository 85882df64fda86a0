-- position_open.lua: open a CFD position atomically (SPEC §1.4): checks, margin lock, netLots,
-- trade tick, SL/TP levels, idempotency, outbox, portfolio frame, then the SL/TP cascade.
--
-- KEYS: [1] wallet:{userId}  [2] positions:{userId}  [3] idem:{userId}:{clientRequestId}
--       [4] jti_block:{jti}  [5] instrument:{instrumentId} (declared; written via the engine)
--       [6] refresh_family:{family} (the session; any key when ARGV[12] is '0')
--       (and the keys lua/lib/engine.lua derives from ids).
-- ARGV: [1] userId  [2] instrumentId  [3] direction (1 long, -1 short)  [4] lotsCentis
--       [5] clientPriceCents  [6] slippage tolerance ppm  [7] stopLossCents or ''
--       [8] takeProfitCents or ''  [9] clientRequestId  [10] request fingerprint
--       [11] new position id (UUID)  [12] '1' when the session family must still be live.
-- Returns: {1, '{"position":{...},"wallet":{...}}'} when opened; {2, <the first result>} for a
--       replayed clientRequestId; {0, code, details JSON} when refused (nothing written).
-- Errors: codes unauthorized (revoked token), idempotency_conflict, not_found (instrument),
--       instrument_inactive, instrument_frozen, wallet_missing (load it and call again),
--       too_many_positions, slippage_exceeded, validation_error (stopLoss/takeProfit vs price),
--       insufficient_margin.
--! include engine.lua
local uid, iid = ARGV[1], ARGV[2]
local dir, lots = tonumber(ARGV[3]), tonumber(ARGV[4])
local client, tol = tonumber(ARGV[5]), tonumber(ARGV[6])
local sl, tp = tonumber(ARGV[7]), tonumber(ARGV[8])
local request_id, fingerprint, pid = ARGV[9], ARGV[10], ARGV[11]

local refused_or_replayed = E.admit(KEYS[4], KEYS[6], ARGV[12], KEYS[3], fingerprint)
if refused_or_replayed then return refused_or_replayed end
local inst = E.instrument(iid)
if not inst then return E.refuse('not_found', {instrumentId = iid}) end
if not inst.active then return E.refuse('instrument_inactive', {instrumentId = iid}) end
if inst.frozen then return E.refuse('instrument_frozen', {instrumentId = iid}) end
local w = E.wallet(uid)
if not w then return {0, 'wallet_missing', '{}'} end
if w.open >= E.MAX_OPEN then
  return E.refuse('too_many_positions', {limit = E.MAX_OPEN})
end
local fill = E.fill(inst, lots, dir)
if E.slipped(dir, fill, client, tol) then
  return E.refuse('slippage_exceeded', {fillPrice = fill / 100, clientPrice = client / 100})
end
-- NOTE: levels are checked against the price after the open (its own trade tick), so none can
-- sit inside the position's own impact and trigger on it (SPEC §1.4).
local price = E.price(inst, inst.net + dir * lots)
local bad = E.invalid_level(dir, price, sl, tp)
if bad then
  return E.refuse('validation_error', {field = bad, price = price / 100})
end
local margin = E.margin(fill, lots)
local value, held, held_price = E.holdings(uid, iid)
local free = w.balance + value - w.cost - w.used
if margin > free then
  return E.refuse('insufficient_margin', {requiredMargin = margin / 100, freeMargin = free / 100})
end

local now = E.now_ms()
redis.call('SADD', KEYS[2], pid)
w.used, w.cost, w.open = w.used + margin, w.cost + dir * lots * fill, w.open + 1
E.save_wallet(w)
E.add_exposure(uid, iid, dir * lots, true)
local outbox = {'position', pid, 'wallet', uid}
if w.referral and w.referral ~= '' then
  -- NOTE: the referred user's first position; the flusher pays the referrer exactly once.
  redis.call('HDEL', KEYS[1], 'referralId')
  outbox[5], outbox[6] = 'referral', w.referral
end
local tick = E.tick(iid, E.TRADE, now, outbox, dir * lots)
local p = {id = pid, userId = uid, instrumentId = iid, idx = inst.idx, direction = dir,
  lotsCentis = lots, entryCents = fill, marginCents = margin, stopLossCents = sl,
  takeProfitCents = tp, status = 'open', openedAtMs = now}
local fields = {'userId', uid, 'instrumentId', iid, 'idx', inst.idx, 'direction', dir,
  'lotsCentis', lots, 'entryCents', fill, 'marginCents', E.int(margin), 'status', 'open',
  'openedAtMs', E.int(now), 'openRequestId', request_id, 'openSeq', tick.seq}
if sl then
  fields[#fields + 1] = 'stopLossCents'
  fields[#fields + 1] = sl
  redis.call('ZADD', dir == 1 and E.k_below(iid) or E.k_above(iid), sl, pid)
end
if tp then
  fields[#fields + 1] = 'takeProfitCents'
  fields[#fields + 1] = tp
  redis.call('ZADD', dir == 1 and E.k_above(iid) or E.k_below(iid), tp, pid)
end
redis.call('HSET', E.k_position(pid), unpack(fields))
local body
if E.settle(tick, now) == 0 then
  -- PERF: nothing else moved, so equity follows from the holdings read for the margin check:
  -- only this instrument's price and the user's lots on it changed.
  value = value - held_price * held + tick.price * (held + dir * lots)
  body = E.encode_body(p, E.wallet_json(w.balance, w.used, w.balance + value - w.cost))
else
  body = E.body(pid, uid)
end
E.remember(KEYS[3], fingerprint, body)
E.frame(uid, 'position_opened', body)
return {1, body}

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

if E.session_ended(KEYS[4], KEYS[6], ARGV[12]) then return E.refuse('unauthorized') end
local replayed = E.replay(KEYS[3], fingerprint)
if replayed then return replayed end
local inst = E.instrument(iid)
if not inst then return E.refuse('not_found', {instrumentId = iid}) end
if not inst.active then return E.refuse('instrument_inactive', {instrumentId = iid}) end
if inst.frozen then return E.refuse('instrument_frozen', {instrumentId = iid}) end
local w = redis.call('HMGET', KEYS[1], 'balanceCents', 'usedMarginCents', 'openCount', 'referralId',
  'costCents')
if not w[1] then return {0, 'wallet_missing', '{}'} end
if tonumber(w[3]) >= E.MAX_OPEN then
  return E.refuse('too_many_positions', {limit = E.MAX_OPEN})
end
local fill = E.fill(inst, lots, dir)
if E.slipped(dir, fill, client, tol) then
  return E.refuse('slippage_exceeded', {fillPrice = fill / 100, clientPrice = client / 100})
end
local price = E.price(inst)
local bad = E.invalid_level(dir, price, sl, tp)
if bad then
  return E.refuse('validation_error', {field = bad, price = price / 100})
end
local margin = E.margin(fill, lots)
local free = tonumber(w[1]) + E.unrealized(uid, tonumber(w[5])) - tonumber(w[2])
if margin > free then
  return E.refuse('insufficient_margin', {requiredMargin = margin / 100, freeMargin = free / 100})
end

local now = E.now_ms()
local pk = E.k_position(pid)
redis.call('HSET', pk, 'userId', uid, 'instrumentId', iid, 'idx', inst.idx, 'direction', dir,
  'lotsCentis', lots, 'entryCents', fill, 'marginCents', E.int(margin), 'status', 'open',
  'openedAtMs', E.int(now), 'openRequestId', request_id)
redis.call('SADD', KEYS[2], pid)
redis.call('HINCRBY', KEYS[1], 'usedMarginCents', E.int(margin))
redis.call('HINCRBY', KEYS[1], 'openCount', 1)
redis.call('HINCRBY', KEYS[1], 'version', 1)
E.add_exposure(uid, iid, dir * lots, dir * lots * fill)
if sl then
  redis.call('HSET', pk, 'stopLossCents', sl)
  redis.call('ZADD', dir == 1 and E.k_below(iid) or E.k_above(iid), sl, pid)
end
if tp then
  redis.call('HSET', pk, 'takeProfitCents', tp)
  redis.call('ZADD', dir == 1 and E.k_above(iid) or E.k_below(iid), tp, pid)
end
E.add_net_lots(iid, dir * lots)
local tick = E.tick(iid, E.TRADE, now)
redis.call('HSET', pk, 'openSeq', tick.seq)
redis.call('XADD', E.OUTBOX, '*', 'position', pid, 'wallet', uid)
if w[4] and w[4] ~= '' then
  -- NOTE: the referred user's first position; the flusher pays the referrer exactly once.
  redis.call('HDEL', KEYS[1], 'referralId')
  redis.call('XADD', E.OUTBOX, '*', 'referral', w[4])
end
E.settle(tick, now)
local body = E.body(pid, uid)
E.remember(KEYS[3], fingerprint, body)
E.frame(uid, 'position_opened', body)
return {1, body}

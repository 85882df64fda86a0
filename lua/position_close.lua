-- position_close.lua: close one of the caller's open positions at market (SPEC §1.4): the fill
-- walks the curve, PnL to the balance, margin released, netLots, trade tick, board, outbox,
-- portfolio frame, then the SL/TP cascade.
--
-- KEYS: [1] wallet:{userId}  [2] idem:{userId}:{clientRequestId}  [3] jti_block:{jti}
--       [4] position:{positionId}  [5] refresh_family:{family} (any key when ARGV[5] is '0')
--       (and the keys lua/lib/engine.lua derives from ids).
-- ARGV: [1] userId  [2] positionId  [3] clientRequestId  [4] request fingerprint
--       [5] '1' when the session family must still be live.
-- Returns: {1, '{"position":{...},"wallet":{...}}'} when closed; {2, <the first result>} for a
--       replayed clientRequestId; {0, code, details JSON} when refused (nothing written).
-- Errors: codes unauthorized (revoked token), idempotency_conflict, not_found (no such position
--       or another user's), position_closed, instrument_inactive, instrument_frozen,
--       wallet_missing (load it and call again).
--! include engine.lua
local uid, pid, request_id, fingerprint = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local refused_or_replayed = E.admit(KEYS[3], KEYS[5], ARGV[5], KEYS[2], fingerprint)
if refused_or_replayed then return refused_or_replayed end
local p = E.position(pid)
-- APPSEC: another user's position is indistinguishable from a missing one.
if not p or p.userId ~= uid then return E.refuse('not_found', {positionId = pid}) end
if p.status ~= 'open' then return E.refuse('position_closed', {positionId = pid}) end
local inst = E.instrument(p.instrumentId)
if not inst then return E.refuse('not_found', {instrumentId = p.instrumentId}) end
if not inst.active then return E.refuse('instrument_inactive', {instrumentId = inst.id}) end
if inst.frozen then return E.refuse('instrument_frozen', {instrumentId = inst.id}) end
local w = E.wallet(uid)
if not w then return {0, 'wallet_missing', '{}'} end

-- NOTE: no partial writes: the holdings are valued before the first write (an instrument of
-- them missing from hot state fails here, with nothing written).
local value, held, held_price = E.holdings(uid, inst.id)

local now = E.now_ms()
local lots = tonumber(p.direction) * tonumber(p.lotsCentis)
local exit = E.fill(inst, tonumber(p.lotsCentis), -tonumber(p.direction))
local tick = E.close(p, exit, 'user', now, request_id, w)
local body
if E.settle(tick, now) == 0 then
  -- PERF: the position and the wallet as E.close left them, and only this instrument's price
  -- and the user's lots on it changed: no need to read them again.
  value = value - held_price * held + tick.price * (held - lots)
  body = E.encode_body(p, E.wallet_json(w.balance, w.used, w.balance + value - w.cost))
else
  body = E.body(pid, uid)
end
E.remember(KEYS[2], fingerprint, body)
E.frame(uid, 'position_closed', body)
return {1, body}

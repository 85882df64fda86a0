-- position_modify.lua: set, keep or clear the stop-loss and take-profit of an open position
-- (SPEC §1.4: long stopLoss < price < takeProfit, short takeProfit < price < stopLoss).
--
-- KEYS: [1] position:{positionId}  [2] jti_block:{jti}
--       [3] refresh_family:{family} (any key when ARGV[5] is '0')  (and keys derived from ids).
-- ARGV: [1] userId  [2] positionId  [3] stop-loss: 'keep' | 'clear' | cents
--       [4] take-profit: 'keep' | 'clear' | cents  [5] '1' when the session family must live.
-- Returns: {1, '<position JSON>'}; {0, code, details JSON} when refused (nothing written).
-- Errors: codes unauthorized, not_found (no such position or another user's, or its instrument
--       not in hot state), position_closed, validation_error (field stopLoss | takeProfit on the
--       wrong side of the price). Every refusal comes before the first write.
--! include engine.lua
local uid, pid = ARGV[1], ARGV[2]

if E.session_ended(KEYS[2], KEYS[3], ARGV[5]) then return E.refuse('unauthorized') end
local p = E.position(pid)
-- APPSEC: another user's position is indistinguishable from a missing one.
if not p or p.userId ~= uid then return E.refuse('not_found', {positionId = pid}) end
if p.status ~= 'open' then return E.refuse('position_closed', {positionId = pid}) end

local function level(arg, current)
  if arg == 'keep' then return tonumber(current) end
  if arg == 'clear' then return nil end
  return tonumber(arg)
end
local sl = level(ARGV[3], p.stopLossCents)
local tp = level(ARGV[4], p.takeProfitCents)
local dir, iid = tonumber(p.direction), p.instrumentId
local inst = E.instrument(iid)
if not inst then return E.refuse('not_found', {instrumentId = iid}) end
local price = E.price(inst)
local bad = E.invalid_level(dir, price, sl, tp)
if bad then return E.refuse('validation_error', {field = bad, price = price / 100}) end

redis.call('ZREM', E.k_below(iid), pid)
redis.call('ZREM', E.k_above(iid), pid)
redis.call('HDEL', KEYS[1], 'stopLossCents', 'takeProfitCents')
if sl then
  redis.call('HSET', KEYS[1], 'stopLossCents', sl)
  redis.call('ZADD', dir == 1 and E.k_below(iid) or E.k_above(iid), sl, pid)
end
if tp then
  redis.call('HSET', KEYS[1], 'takeProfitCents', tp)
  redis.call('ZADD', dir == 1 and E.k_above(iid) or E.k_below(iid), tp, pid)
end
redis.call('XADD', E.OUTBOX, '*', 'position', pid)
return {1, cjson.encode(E.position_view(E.position(pid)))}

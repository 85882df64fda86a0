-- engine.lua: code shared by the trading scripts, spliced into each one by ftl/store/scripts.py where
-- the script says `--! include engine.lua`. Mirrors ftl/market/rules.py exactly: integers only (cents,
-- centilots, kMod micro-points per lot, tolerance in ppm), every division half away from zero
-- except fills, which round against the trader (docs/decisions/0090).
--
-- Keys it derives from ids (standalone Redis; the names match ftl/store/keys.py):
--   instrument:{id} hash, wallet:{userId} hash, position:{id} hash, positions:{userId} set,
--   exposure:{userId} hash (instrumentId -> Σ lotsCentis × direction), stops:below:{instrumentId} / stops:above:{instrumentId} zsets,
--   ticklog:{instrumentId} zset, prices hash, outbox stream, board:overall, board:district:{d},
--   board:arrivals;
--   held:{userId} hash (instrumentId -> how many of his positions on it are open, absent when 0);
--   holders:{instrumentId} set (user ids with an open position on it, hedged ones included: the
--   margin evaluator's and the full-time close-out's index);
--   margin:unboxed set (users whose wallet changed since their safe box was indexed:
--   lua/margin_boxes_save.lua, docs/decisions/0166);
--   channels price:{instrumentId}, portfolio:{userId}.
-- Position hash fields: userId, instrumentId, idx, direction (1 | -1), lotsCentis, entryCents,
--   marginCents, stopLossCents?, takeProfitCents?, status (open | closed), openedAtMs, openSeq,
--   openRequestId, exitCents?, pnlCents?, closedAtMs?, closedBy?, closeSeq?, closeRequestId?.
-- Wallet hash fields: balanceCents, realizedCents, bonusCents, usedMarginCents, costCents,
--   openCount, version, districtId, boardMember?, referralId?, paidReferrals.
local E = {}
E.PRICE_FLOOR = 100
E.MAX_OPEN = 50
E.TICK_LOG_CAP = 2000
E.IDEM_TTL = 86400
-- PERF: bounds one call's SL/TP cascade; what is left is reached again by the next tick.
E.MAX_SYSTEM_CLOSES = 200
E.TRADE = 1
E.OUTBOX = 'outbox'
E.BOARD = 'board:overall'
E.ARRIVALS = 'board:arrivals'
E.PRICES = 'prices'
E.UNBOXED = 'margin:unboxed'

function E.k_instrument(id) return 'instrument:' .. id end
function E.k_wallet(id) return 'wallet:' .. id end
function E.k_position(id) return 'position:' .. id end
function E.k_open(id) return 'positions:' .. id end
function E.k_exposure(id) return 'exposure:' .. id end
function E.k_below(id) return 'stops:below:' .. id end
function E.k_above(id) return 'stops:above:' .. id end
function E.k_ticklog(id) return 'ticklog:' .. id end
function E.k_district(id) return 'board:district:' .. id end
function E.k_holders(id) return 'holders:' .. id end
function E.k_held(id) return 'held:' .. id end

-- NOTE: tostring() of a Lua 5.1 number keeps 14 digits; integers go to Redis through this.
function E.int(x) return string.format('%d', x) end

function E.div(num, den)
  local a = math.abs(num)
  local r = math.fmod(a, den)
  local q = (a - r) / den
  if r * 2 >= den then q = q + 1 end
  if num < 0 then return -q end
  return q
end

-- The price at netLots `net` (default: the instrument's own).
function E.price(inst, net)
  return math.max(E.PRICE_FLOOR, inst.live + E.div(inst.kmod * (net or inst.net), 1000000))
end

-- NOTE: quotients as (x - fmod(x, b)) / b: fmod and the division of an exact multiple are exact.
local function divmod(x, b)
  local r = math.fmod(x, b)
  return (x - r) / b, r
end

-- floor(a × a / b) and whether it leaves a remainder, exactly, for 0 < a < b < 2^44: a × a can
-- pass 2^53, where doubles stop being exact, so a is taken one byte at a time, most significant
-- first (schoolbook division; every intermediate stays below 2^53).
local BYTE = 256
function E.square_div(a, b)
  local bytes, rest = {}, a
  while rest > 0 do
    local d
    rest, d = divmod(rest, BYTE)
    bytes[#bytes + 1] = d
  end
  local q, r = 0, 0
  for i = #bytes, 1, -1 do
    local qd
    qd, r = divmod(r * BYTE + a * bytes[i], b)
    q = q * BYTE + qd
  end
  return q, r ~= 0
end

-- The average of the curve max(1.00, live + kMod × x) as netLots x walks from `from` to `to`,
-- exactly, rounded up (round_up) or down to the cent: ftl.market.rules.curve_average_cents.
function E.curve_average(inst, from, to, round_up)
  local low, high = from, to
  if low > high then low, high = to, from end
  local above_low = 1000000 * (inst.live - E.PRICE_FLOOR) + inst.kmod * low
  local above_high = above_low + inst.kmod * (high - low)
  if above_high <= 0 then return E.PRICE_FLOOR end
  local q, rest
  if above_low >= 0 then
    -- PERF: the usual case (the trade stays above the floor), divmod inlined.
    local num = above_low + above_high
    local r = math.fmod(num, 2000000)
    q, rest = (num - r) / 2000000, r ~= 0
  else
    -- NOTE: only the part from the crossing to `high` lies above the floor: a triangle.
    -- floor(h² / (2e6 × kMod × lots)) = floor(floor(h² / (kMod × lots)) / 2e6).
    local q1, r1 = E.square_div(above_high, inst.kmod * (high - low))
    local r
    q, r = divmod(q1, 2000000)
    rest = r1 or r ~= 0
  end
  if round_up and rest then q = q + 1 end
  return E.PRICE_FLOOR + q
end

-- A trade adding side × lots to netLots, rounded against the trader (up when he buys).
function E.fill(inst, lots, side)
  return E.curve_average(inst, inst.net, inst.net + side * lots, side > 0)
end

function E.margin(fill, lots) return E.div(fill * lots, 10) end

function E.slipped(dir, fill, client, tol)
  if dir == 1 then return fill * 1000000 > client * (1000000 + tol) end
  return fill * 1000000 < client * (1000000 - tol)
end

function E.invalid_level(dir, price, sl, tp)
  if sl and (sl - price) * dir >= 0 then return 'stopLoss' end
  if tp and (tp - price) * dir <= 0 then return 'takeProfit' end
  return nil
end

function E.stop_reached(dir, sl, tp, price)
  if sl and (price - sl) * dir <= 0 then return 'stop_loss' end
  if tp and (price - tp) * dir >= 0 then return 'take_profit' end
  return nil
end

-- The caller's session ended: its access token revoked, or (check == '1') its refresh family gone.
function E.session_ended(jti_key, family_key, check)
  if redis.call('EXISTS', jti_key) == 1 then return true end
  return check == '1' and redis.call('EXISTS', family_key) == 0
end

-- Whether a trade may go on: a refusal when the caller's session ended (as E.session_ended),
-- the first result when `idem_key` holds one (E.remember), or nil to go on.
-- PERF: one MGET reads the session's keys (strings) and the idempotency key.
function E.admit(jti_key, family_key, check, idem_key, fingerprint)
  local v = redis.call('MGET', jti_key, family_key, idem_key)
  if v[1] or (check == '1' and not v[2]) then return E.refuse('unauthorized') end
  local stored = v[3]
  if not stored then return nil end
  local sep = string.find(stored, '\n', 1, true)
  if string.sub(stored, 1, sep - 1) ~= fingerprint then
    return E.refuse('idempotency_conflict')
  end
  -- NOTE: a replay writes the same record again (value and expiry unchanged) so that it is a
  -- write on this connection: the WAIT after it (decision 0151) then covers the original trade,
  -- which the replication stream carries before it.
  redis.call('SET', idem_key, stored, 'KEEPTTL')
  return {2, string.sub(stored, sep + 1)}
end

function E.refuse(code, details)
  return {0, code, cjson.encode(details or {})}
end

function E.now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ISO-8601 UTC with milliseconds (days to civil date: H. Hinnant's algorithm).
function E.iso(ms)
  ms = tonumber(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local sod = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(sod / 3600),
    math.floor((sod % 3600) / 60), sod % 60, ms - s * 1000)
end

-- PERF: instruments read once per call; a script that writes one itself calls E.changed(id),
-- E.tick keeps the cached copy current instead.
local instruments = {}

function E.instrument(id)
  local inst = instruments[id]
  if inst then return inst end
  local f = redis.call('HMGET', E.k_instrument(id), 'idx', 'liveBasePriceCents', 'kModMicros',
    'netLotsCentis', 'isActive', 'frozen', 'degraded', 'seq')
  if not f[1] then return nil end
  inst = {id = id, idx = tonumber(f[1]), live = tonumber(f[2]), kmod = tonumber(f[3]),
    net = tonumber(f[4]), active = f[5] == '1', frozen = f[6] == '1', degraded = tonumber(f[7]),
    seq = tonumber(f[8]) or 0}
  instruments[id] = inst
  return inst
end

function E.changed(id) instruments[id] = nil end

-- A fresh cache for a call of a Redis Function (its library outlives the call; a script's run
-- starts fresh anyway).
function E.reset() instruments = {} end

local POSITION_FIELDS = {'userId', 'instrumentId', 'idx', 'direction', 'lotsCentis', 'entryCents',
  'marginCents', 'stopLossCents', 'takeProfitCents', 'status', 'openedAtMs', 'exitCents',
  'pnlCents', 'closedAtMs', 'closedBy'}

function E.position(pid)
  local f = redis.call('HMGET', E.k_position(pid), unpack(POSITION_FIELDS))
  if not f[1] then return nil end
  local p = {id = pid}
  for i, name in ipairs(POSITION_FIELDS) do
    if f[i] and f[i] ~= '' then p[name] = f[i] end
  end
  return p
end

local function money(cents)
  if cents == nil then return cjson.null end
  return tonumber(cents) / 100
end

-- `p` as E.position returns it, or with numbers where it holds strings (a position just written).
function E.position_view(p)
  return {id = p.id, instrumentId = p.instrumentId, idx = tonumber(p.idx),
    direction = tonumber(p.direction) == 1 and 'long' or 'short',
    lotSize = tonumber(p.lotsCentis) / 100,
    entryPrice = money(p.entryCents), margin = money(p.marginCents),
    stopLoss = money(p.stopLossCents), takeProfit = money(p.takeProfitCents),
    openedAt = E.iso(p.openedAtMs), status = p.status, exitPrice = money(p.exitCents),
    realizedPnl = money(p.pnlCents), closedAt = p.closedAtMs and E.iso(p.closedAtMs) or cjson.null,
    closedBy = p.closedBy or cjson.null}
end

-- The user's holdings at current prices, in cents: Σ over held instruments of price × (Σ lots ×
-- direction); unrealized PnL is that minus costCents (Σ entry × lots × direction over every open
-- position, kept in the wallet hash). Also returns the lots held on `iid` (when given) and the
-- price they were valued at.
-- PERF: one HMGET of the `prices` hash (price of each instrument as of its last tick) instead of
-- one read per instrument; an instrument not ticked yet is priced from its own hash.
function E.holdings(uid, iid)
  local flat = redis.call('HGETALL', E.k_exposure(uid))
  local n = #flat / 2
  if n == 0 then return 0, 0, 0 end
  local ids = {}
  for i = 1, n do ids[i] = flat[2 * i - 1] end
  local prices = redis.call('HMGET', E.PRICES, unpack(ids))
  local value, lots_on, price_on = 0, 0, 0
  for i = 1, n do
    local price = tonumber(prices[i]) or E.price(E.instrument(ids[i]))
    local lots = tonumber(flat[2 * i])
    value = value + price * lots
    if ids[i] == iid then lots_on, price_on = lots, price end
  end
  return value, lots_on, price_on
end

-- The wallet hash with its numbers as numbers; nil when the user is not in hot state.
function E.wallet(uid)
  local f = redis.call('HMGET', E.k_wallet(uid), 'balanceCents', 'realizedCents',
    'usedMarginCents', 'costCents', 'openCount', 'version', 'districtId', 'boardMember',
    'referralId')
  if not f[1] then return nil end
  return {uid = uid, balance = tonumber(f[1]), realized = tonumber(f[2]) or 0,
    used = tonumber(f[3]) or 0, cost = tonumber(f[4]) or 0, open = tonumber(f[5]) or 0,
    version = tonumber(f[6]) or 0, district = f[7], member = f[8], referral = f[9]}
end

-- PERF: one HSET of every figure a trade changes instead of one HINCRBY per figure.
function E.save_wallet(w)
  w.version = w.version + 1
  local fields = {'balanceCents', E.int(w.balance), 'realizedCents', E.int(w.realized),
    'usedMarginCents', E.int(w.used), 'costCents', E.int(w.cost), 'openCount', E.int(w.open),
    'version', E.int(w.version)}
  if w.member then
    fields[#fields + 1] = 'boardMember'
    fields[#fields + 1] = w.member
  end
  redis.call('HSET', E.k_wallet(w.uid), unpack(fields))
  -- NOTE: his safe box (made for the wallet before) no longer promises anything: the next
  -- margin pass evaluates him (docs/decisions/0166).
  redis.call('SADD', E.UNBOXED, w.uid)
end

-- The `wallet` of a response or frame, from balance, used margin and equity in cents.
function E.wallet_json(balance, used, equity)
  local level = cjson.null
  if used > 0 then level = E.div(equity * 10000, used) / 100 end
  return {balance = balance / 100, usedMargin = used / 100, equity = equity / 100,
    freeMargin = (equity - used) / 100, marginLevel = level}
end

function E.wallet_view(uid)
  local w = E.wallet(uid)
  return E.wallet_json(w.balance, w.used, w.balance + E.holdings(uid) - w.cost)
end

function E.encode_body(p, wallet)
  return cjson.encode({position = E.position_view(p), wallet = wallet})
end

function E.body(pid, uid)
  return E.encode_body(E.position(pid), E.wallet_view(uid))
end

function E.frame(uid, event, body)
  redis.call('PUBLISH', 'portfolio:' .. uid,
    '{"type":"portfolio","event":"' .. event .. '",' .. string.sub(body, 2))
end

function E.remember(key, fingerprint, body)
  redis.call('SET', key, fingerprint .. '\n' .. body, 'EX', E.IDEM_TTL)
end

-- A tick of the instrument as it stands now, after a trade moved its netLots by `lots` (when
-- given): seq + 1, tick log, PUBLISH, outbox (the entry also carries `outbox`, more field-value
-- pairs, when given: one XADD per trade). `hangs_on`: the seq of the tick whose stop-loss and
-- take-profit closes (E.settle, in the same call) this tick is one of, carried as `h`, so a
-- margin replay washing out at that tick fills from the netLots those closes left.
-- PERF: seq and netLots written in one HSET, from the instrument as this call read it.
function E.tick(iid, source, now, outbox, lots, hangs_on)
  local inst = E.instrument(iid)
  local seq = inst.seq + 1
  inst.seq = seq
  if lots then
    inst.net = inst.net + lots
    redis.call('HSET', E.k_instrument(iid), 'seq', E.int(seq), 'netLotsCentis', E.int(inst.net))
  else
    redis.call('HSET', E.k_instrument(iid), 'seq', E.int(seq))
  end
  local price = E.price(inst)
  local json = string.format(
    '{"id":"%s","i":%d,"q":%d,"p":%d,"b":%d,"n":%d,"k":%d,"s":%d,"t":%d,"d":%d%s}',
    iid, inst.idx, seq, price, inst.live, inst.net, inst.kmod, source, now, inst.degraded,
    hangs_on and string.format(',"h":%d', hangs_on) or '')
  redis.call('HSET', E.PRICES, iid, price)
  local log = E.k_ticklog(iid)
  redis.call('ZADD', log, seq, json)
  redis.call('ZREMRANGEBYRANK', log, 0, -(E.TICK_LOG_CAP + 1))
  redis.call('PUBLISH', 'price:' .. iid, json)
  redis.call('XADD', E.OUTBOX, '*', 'tick', json, unpack(outbox or {}))
  return {iid = iid, seq = seq, price = price, json = json}
end

-- A position's lots (× direction) on its instrument, added when it opens (`opening`) or loads,
-- taken away when it closes (its cost, entry × lots × direction, is the caller's to add to the
-- wallet's costCents). Keeps the instrument -> holders index that the margin evaluator and the
-- full-time close-out read: a holder is a user with an open position on the instrument, counted
-- in held:{userId}, so he joins when his count leaves 0 and leaves when it returns to 0.
-- NOTE: a hedged user (a long and a short of equal lots) has no net exposure but still holds
-- positions that full time must close, so net lots never decide (docs/decisions/0094).
function E.add_exposure(uid, iid, lots, opening)
  local key, held = E.k_exposure(uid), E.k_held(uid)
  if redis.call('HINCRBY', key, iid, E.int(lots)) == 0 then redis.call('HDEL', key, iid) end
  if opening then
    if redis.call('HINCRBY', held, iid, 1) == 1 then
      redis.call('SADD', E.k_holders(iid), uid)
    end
  elseif redis.call('HINCRBY', held, iid, -1) == 0 then
    redis.call('HDEL', held, iid)
    redis.call('SREM', E.k_holders(iid), uid)
  end
end

-- Overall and district boards: score = realized PnL cents; among equal scores the earlier
-- arrival ranks first (ZREVRANGE orders equal scores by member, descending).
local function board(w)
  local arrival = redis.call('INCR', E.ARRIVALS)
  local member = string.format('%015d:%s', 999999999999999 - arrival, w.uid)
  local district = E.k_district(w.district)
  if w.member then
    redis.call('ZREM', E.BOARD, w.member)
    redis.call('ZREM', district, w.member)
  end
  redis.call('ZADD', E.BOARD, E.int(w.realized), member)
  redis.call('ZADD', district, E.int(w.realized), member)
  w.member = member
end

-- Close an open position at `exit`: wallet, exposure, netLots, stops, board, outbox, trade tick.
-- `w` is the owner's E.wallet (read here when not given) and `p` (E.position) become the state
-- after the close.
function E.close(p, exit, reason, now, request_id, w, hangs_on)
  local pid, uid, iid = p.id, p.userId, p.instrumentId
  local dir, lots = tonumber(p.direction), tonumber(p.lotsCentis)
  local entry, margin = tonumber(p.entryCents), tonumber(p.marginCents)
  local pnl = (exit - entry) * lots * dir
  w = w or E.wallet(uid)
  redis.call('SREM', E.k_open(uid), pid)
  if p.stopLossCents or p.takeProfitCents then
    redis.call('ZREM', E.k_below(iid), pid)
    redis.call('ZREM', E.k_above(iid), pid)
  end
  E.add_exposure(uid, iid, -dir * lots)
  w.balance, w.realized = w.balance + pnl, w.realized + pnl
  w.used, w.cost, w.open = w.used - margin, w.cost - dir * lots * entry, w.open - 1
  board(w)
  E.save_wallet(w)
  local ledger = string.format(
    '{"entryKey":"close:%s","userId":"%s","reason":"position_closed","amountCents":%d,"balanceAfterCents":%d,"positionId":"%s","atMs":%d}',
    pid, uid, pnl, w.balance, pid, now)
  local tick = E.tick(iid, E.TRADE, now, {'position', pid, 'wallet', uid, 'ledger', ledger},
    -dir * lots, hangs_on)
  p.status, p.exitCents, p.pnlCents, p.closedAtMs, p.closedBy = 'closed', exit, pnl, now, reason
  redis.call('HSET', E.k_position(pid), 'status', 'closed', 'exitCents', E.int(exit),
    'pnlCents', E.int(pnl), 'closedAtMs', E.int(now), 'closedBy', reason,
    'closeRequestId', request_id, 'closeSeq', tick.seq)
  return tick
end

-- Close every position whose stop-loss or take-profit a tick reached (SPEC §1.4): the tick
-- decides when, the curve decides the price. The hits of one tick close in (openedAt, id) order,
-- each filling along the curve from the netLots the previous close left (the instrument as it
-- stands: a close moves it); each close is a trade tick that may reach further levels (handled in
-- order, breadth first). Returns how many positions it closed.
local function opened_first(a, b)
  if a.openedAtMs ~= b.openedAtMs then return tonumber(a.openedAtMs) < tonumber(b.openedAtMs) end
  return a.id < b.id
end

function E.settle(first, now)
  local queue, head, closes = {first}, 1, 0
  while head <= #queue do
    local t = queue[head]
    head = head + 1
    local hits, seen = {}, {}
    for _, pid in ipairs(redis.call('ZRANGEBYSCORE', E.k_below(t.iid), t.price, '+inf')) do
      if not seen[pid] then seen[pid] = true; hits[#hits + 1] = pid end
    end
    for _, pid in ipairs(redis.call('ZRANGEBYSCORE', E.k_above(t.iid), '-inf', t.price)) do
      if not seen[pid] then seen[pid] = true; hits[#hits + 1] = pid end
    end
    local reached = {}
    for _, pid in ipairs(hits) do
      local p = E.position(pid)
      local reason = p and p.status == 'open' and E.stop_reached(tonumber(p.direction),
        tonumber(p.stopLossCents), tonumber(p.takeProfitCents), t.price)
      -- NOTE: no partial writes: a close whose owner's wallet is not in hot state (Redis lost
      -- it; `ftl recover` brings it back) is left for a later tick instead of failing the call.
      if reason and redis.call('EXISTS', E.k_wallet(p.userId)) == 1 then
        p.reason = reason
        reached[#reached + 1] = p
      end
    end
    table.sort(reached, opened_first)
    for _, p in ipairs(reached) do
      if closes >= E.MAX_SYSTEM_CLOSES then return closes end
      local exit = E.fill(E.instrument(t.iid), tonumber(p.lotsCentis), -tonumber(p.direction))
      queue[#queue + 1] = E.close(p, exit, p.reason, now, '', nil, first.seq)
      closes = closes + 1
      E.frame(p.userId, 'position_closed', E.encode_body(p, E.wallet_view(p.userId)))
    end
  end
  return closes
end

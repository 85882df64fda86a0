-- engine.lua: code shared by the trading scripts, spliced into each one by ftl/scripts.py where
-- the script says `--! include engine.lua`. Mirrors ftl/market.py exactly: integers only (cents,
-- centilots, kMod micro-points per lot, tolerance in ppm), every division half away from zero.
--
-- Keys it derives from ids (standalone Redis; the names match ftl/keys.py):
--   instrument:{id} hash, wallet:{userId} hash, position:{id} hash, positions:{userId} set,
--   exposure:{userId} hash (instrumentId -> Σ lotsCentis × direction), stops:below:{instrumentId} / stops:above:{instrumentId} zsets,
--   ticklog:{instrumentId} zset, prices hash, outbox stream, board:overall, board:district:{d},
--   board:arrivals;
--   holders:{instrumentId} set (user ids with exposure on it: the margin evaluator's index);
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

function E.price(inst)
  return math.max(E.PRICE_FLOOR, inst.live + E.div(inst.kmod * inst.net, 1000000))
end

function E.fill(inst, lots, side)
  return math.max(E.PRICE_FLOOR, inst.live + E.div(inst.kmod * (2 * inst.net + side * lots), 2000000))
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

-- PERF: instruments read once per call; every write to one goes through E.changed(id).
local instruments = {}

function E.instrument(id)
  local inst = instruments[id]
  if inst then return inst end
  local f = redis.call('HMGET', E.k_instrument(id), 'idx', 'liveBasePriceCents', 'kModMicros',
    'netLotsCentis', 'isActive', 'frozen', 'degraded')
  if not f[1] then return nil end
  inst = {id = id, idx = tonumber(f[1]), live = tonumber(f[2]), kmod = tonumber(f[3]),
    net = tonumber(f[4]), active = f[5] == '1', frozen = f[6] == '1', degraded = tonumber(f[7])}
  instruments[id] = inst
  return inst
end

function E.add_net_lots(id, lots)
  redis.call('HINCRBY', E.k_instrument(id), 'netLotsCentis', E.int(lots))
  instruments[id] = nil
end

function E.changed(id) instruments[id] = nil end

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

function E.position_view(p)
  return {id = p.id, instrumentId = p.instrumentId, idx = tonumber(p.idx),
    direction = p.direction == '1' and 'long' or 'short', lotSize = tonumber(p.lotsCentis) / 100,
    entryPrice = money(p.entryCents), margin = money(p.marginCents),
    stopLoss = money(p.stopLossCents), takeProfit = money(p.takeProfitCents),
    openedAt = E.iso(p.openedAtMs), status = p.status, exitPrice = money(p.exitCents),
    realizedPnl = money(p.pnlCents), closedAt = p.closedAtMs and E.iso(p.closedAtMs) or cjson.null,
    closedBy = p.closedBy or cjson.null}
end

-- Unrealized PnL of the user's open positions at current prices, in cents:
-- Σ over held instruments of price × (Σ lots × direction), minus costCents (Σ entry × lots ×
-- direction over every open position, kept in the wallet hash).
-- PERF: one HMGET of the `prices` hash (price of each instrument as of its last tick) instead of
-- one read per instrument; an instrument not ticked yet is priced from its own hash.
function E.unrealized(uid, cost)
  local flat = redis.call('HGETALL', E.k_exposure(uid))
  local total = -cost
  if #flat == 0 then return total end
  local ids = {}
  for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
  local prices = redis.call('HMGET', E.PRICES, unpack(ids))
  for i, iid in ipairs(ids) do
    local price = tonumber(prices[i]) or E.price(E.instrument(iid))
    total = total + price * tonumber(flat[2 * i])
  end
  return total
end

function E.wallet_view(uid)
  local w = redis.call('HMGET', E.k_wallet(uid), 'balanceCents', 'usedMarginCents', 'costCents')
  local balance, used = tonumber(w[1]), tonumber(w[2])
  local equity = balance + E.unrealized(uid, tonumber(w[3]))
  local level = cjson.null
  if used > 0 then level = E.div(equity * 10000, used) / 100 end
  return {balance = balance / 100, usedMargin = used / 100, equity = equity / 100,
    freeMargin = (equity - used) / 100, marginLevel = level}
end

function E.body(pid, uid)
  return cjson.encode({position = E.position_view(E.position(pid)), wallet = E.wallet_view(uid)})
end

function E.frame(uid, event, body)
  redis.call('PUBLISH', 'portfolio:' .. uid,
    '{"type":"portfolio","event":"' .. event .. '",' .. string.sub(body, 2))
end

function E.replay(key, fingerprint)
  local stored = redis.call('GET', key)
  if not stored then return nil end
  local sep = string.find(stored, '\n', 1, true)
  if string.sub(stored, 1, sep - 1) ~= fingerprint then
    return E.refuse('idempotency_conflict')
  end
  return {2, string.sub(stored, sep + 1)}
end

function E.remember(key, fingerprint, body)
  redis.call('SET', key, fingerprint .. '\n' .. body, 'EX', E.IDEM_TTL)
end

-- A tick of the instrument as it stands now: seq + 1, tick log, PUBLISH, outbox.
function E.tick(iid, source, now)
  local inst = E.instrument(iid)
  local seq = redis.call('HINCRBY', E.k_instrument(iid), 'seq', 1)
  local price = E.price(inst)
  local json = string.format('{"id":"%s","i":%d,"q":%d,"p":%d,"b":%d,"n":%d,"s":%d,"t":%d,"d":%d}',
    iid, inst.idx, seq, price, inst.live, inst.net, source, now, inst.degraded)
  redis.call('HSET', E.PRICES, iid, price)
  local log = E.k_ticklog(iid)
  redis.call('ZADD', log, seq, json)
  redis.call('ZREMRANGEBYRANK', log, 0, -(E.TICK_LOG_CAP + 1))
  redis.call('PUBLISH', 'price:' .. iid, json)
  redis.call('XADD', E.OUTBOX, '*', 'tick', json)
  return {iid = iid, seq = seq, price = price, json = json}
end

-- A position's lots (× direction) on its instrument and its cost (entry × lots × direction).
function E.add_exposure(uid, iid, lots, cost)
  local key = E.k_exposure(uid)
  local q = redis.call('HINCRBY', key, iid, E.int(lots))
  redis.call('HINCRBY', E.k_wallet(uid), 'costCents', E.int(cost))
  if q == 0 then
    redis.call('HDEL', key, iid)
    redis.call('SREM', E.k_holders(iid), uid)
  else
    -- NOTE: the instrument -> holders index the after-tick margin evaluator reads.
    redis.call('SADD', E.k_holders(iid), uid)
  end
end

-- Overall and district boards: score = realized PnL cents; among equal scores the earlier
-- arrival ranks first (ZREVRANGE orders equal scores by member, descending).
local function board(uid, realized)
  local wk = E.k_wallet(uid)
  local w = redis.call('HMGET', wk, 'boardMember', 'districtId')
  local arrival = redis.call('INCR', E.ARRIVALS)
  local member = string.format('%015d:%s', 999999999999999 - arrival, uid)
  local district = E.k_district(w[2])
  if w[1] then
    redis.call('ZREM', E.BOARD, w[1])
    redis.call('ZREM', district, w[1])
  end
  redis.call('ZADD', E.BOARD, E.int(realized), member)
  redis.call('ZADD', district, E.int(realized), member)
  redis.call('HSET', wk, 'boardMember', member)
end

-- Close an open position at `exit`: wallet, exposure, netLots, stops, board, outbox, trade tick.
function E.close(p, exit, reason, now, request_id)
  local pid, uid, iid = p.id, p.userId, p.instrumentId
  local dir, lots = tonumber(p.direction), tonumber(p.lotsCentis)
  local entry, margin = tonumber(p.entryCents), tonumber(p.marginCents)
  local pnl = (exit - entry) * lots * dir
  local pk = E.k_position(pid)
  redis.call('HSET', pk, 'status', 'closed', 'exitCents', E.int(exit), 'pnlCents', E.int(pnl),
    'closedAtMs', E.int(now), 'closedBy', reason, 'closeRequestId', request_id)
  redis.call('SREM', E.k_open(uid), pid)
  redis.call('ZREM', E.k_below(iid), pid)
  redis.call('ZREM', E.k_above(iid), pid)
  E.add_exposure(uid, iid, -dir * lots, -dir * lots * entry)
  local wk = E.k_wallet(uid)
  local balance = redis.call('HINCRBY', wk, 'balanceCents', E.int(pnl))
  local realized = redis.call('HINCRBY', wk, 'realizedCents', E.int(pnl))
  redis.call('HINCRBY', wk, 'usedMarginCents', E.int(-margin))
  redis.call('HINCRBY', wk, 'openCount', -1)
  redis.call('HINCRBY', wk, 'version', 1)
  board(uid, realized)
  E.add_net_lots(iid, -dir * lots)
  local tick = E.tick(iid, E.TRADE, now)
  redis.call('HSET', pk, 'closeSeq', tick.seq)
  local ledger = string.format(
    '{"entryKey":"close:%s","userId":"%s","reason":"position_closed","amountCents":%d,"balanceAfterCents":%d,"positionId":"%s","atMs":%d}',
    pid, uid, pnl, balance, pid, now)
  redis.call('XADD', E.OUTBOX, '*', 'position', pid, 'wallet', uid, 'ledger', ledger)
  return tick
end

-- Close, at the tick's price, every position whose stop-loss or take-profit the tick reached;
-- each close is a trade tick that may reach further levels (handled in order, breadth first).
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
    table.sort(hits)
    for _, pid in ipairs(hits) do
      if closes >= E.MAX_SYSTEM_CLOSES then return end
      local p = E.position(pid)
      local reason = p and p.status == 'open' and E.stop_reached(tonumber(p.direction),
        tonumber(p.stopLossCents), tonumber(p.takeProfitCents), t.price)
      if reason then
        queue[#queue + 1] = E.close(p, t.price, reason, now, '')
        closes = closes + 1
        E.frame(p.userId, 'position_closed', E.body(pid, p.userId))
      end
    end
  end
end

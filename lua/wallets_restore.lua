-- wallets_restore.lua: `ftl recover` (SPEC §2): replace the hot state of a chunk of wallets with
-- their Postgres rows: wallet:{userId}, positions:{userId}, exposure:{userId}, held:{userId}
-- (counted here from the positions) and each open position:{id}, as trading and wallet_load.lua
-- write them. (The holders index and the SL/TP sets are per instrument: ftl/ops/recover.py
-- writes them whole.)
--
-- KEYS: none: every key derives from the user and position ids, as in lua/lib/engine.lua.
-- ARGV: [1] JSON array of wallets, each [userId, the WALLET fields in order,
--       [instrumentId, net lots centis, ...], [position, ...]], each position [positionId, the
--       POSITION fields in order]; values are strings, or null for a field the hash lacks.
--       [2] JSON {userId -> boardMember} for the chunk's users on the boards.
-- Returns: the number of wallets written.
-- Errors: a malformed row (no user id or balance, odd exposure list), before the first write.
--! include engine.lua
-- PERF: positional rows, not objects (ftl/ops/recover.py's SQL builds them as text, cheaply), and
-- one command per key: 150,000 positions are written at once.
local WALLET = {'balanceCents', 'realizedCents', 'bonusCents', 'usedMarginCents', 'costCents',
  'openCount', 'version', 'districtId', 'paidReferrals', 'referralId'}
local POSITION = {'instrumentId', 'idx', 'direction', 'lotsCentis', 'entryCents', 'marginCents',
  'openedAtMs', 'openSeq', 'openRequestId', 'stopLossCents', 'takeProfitCents'}

-- HSET arguments: name, value, ... of the row's non-null values after row[1].
local function pairs_of(names, row)
  local list = {}
  for n, name in ipairs(names) do
    local value = row[n + 1]
    if value ~= cjson.null then
      list[#list + 1] = name
      list[#list + 1] = value
    end
  end
  return list
end

local members = cjson.decode(ARGV[2])
local users = cjson.decode(ARGV[1])
-- NOTE: no partial writes: every row is checked before the first write.
local function malformed(user)
  if type(user) ~= 'table' or type(user[1]) ~= 'string' or type(user[2]) ~= 'string' then
    return true
  end
  local net, positions = user[#WALLET + 2], user[#WALLET + 3]
  if type(net) ~= 'table' or #net % 2 == 1 or type(positions) ~= 'table' then return true end
  for _, row in ipairs(positions) do
    if type(row) ~= 'table' or type(row[1]) ~= 'string' or type(row[2]) ~= 'string' then
      return true
    end
  end
  return false
end
for _, user in ipairs(users) do
  if malformed(user) then
    return redis.error_reply('wallets_restore: malformed wallet row')
  end
end
for _, user in ipairs(users) do
  local uid = user[1]
  local wallet, open, exposure, held = E.k_wallet(uid), E.k_open(uid), E.k_exposure(uid),
    E.k_held(uid)
  redis.call('DEL', wallet, open, exposure, held)
  local fields = pairs_of(WALLET, user)
  if members[uid] then
    fields[#fields + 1] = 'boardMember'
    fields[#fields + 1] = members[uid]
  end
  redis.call('HSET', wallet, unpack(fields))
  redis.call('SADD', E.UNBOXED, uid)  -- a margin pass evaluates him (docs/decisions/0166)
  local net = user[#WALLET + 2]
  if #net > 0 then redis.call('HSET', exposure, unpack(net)) end
  local positions = user[#WALLET + 3]
  local ids, counts = {}, {}
  for n, row in ipairs(positions) do
    ids[n] = row[1]
    counts[row[2]] = (counts[row[2]] or 0) + 1
    local position = pairs_of(POSITION, row)
    redis.call('HSET', E.k_position(row[1]), 'userId', uid, 'status', 'open', unpack(position))
  end
  if #ids > 0 then redis.call('SADD', open, unpack(ids)) end
  local per_instrument = {}
  for iid, count in pairs(counts) do
    per_instrument[#per_instrument + 1] = iid
    per_instrument[#per_instrument + 1] = E.int(count)
  end
  if #per_instrument > 0 then redis.call('HSET', held, unpack(per_instrument)) end
end
return #users

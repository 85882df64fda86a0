-- referral_pay.lua: credit the referrer when his referred user opened a first position (SPEC
-- §1.9): 500 points, plus 100 × n / 5 when his count n of paid referrals is a multiple of 5.
-- Exactly once per referral: the marker key remembers the payout and a repeat only reports it.
--
-- KEYS: [1] wallet:{referrerId}  [2] referral_paid:{referralId}.
-- ARGV: [1] referrerId  [2] referralId.
-- Returns: {1, bonusCents, n} when credited now; {2, bonusCents, n} when credited before;
--       {0, 'wallet_missing', '{}'} when the referrer's wallet is not in hot state (load, retry).
-- Errors: none; a script error (an instrument of his holdings missing from hot state) comes
--       before the first write.
--! include engine.lua
local referrer, referral = ARGV[1], ARGV[2]
local done = redis.call('GET', KEYS[2])
if done then
  local sep = string.find(done, ':', 1, true)
  return {2, tonumber(string.sub(done, 1, sep - 1)), tonumber(string.sub(done, sep + 1))}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'wallet_missing', '{}'} end
-- NOTE: no partial writes: the holdings the frame shows are valued before the credit (an
-- instrument missing from hot state fails here, with nothing written).
local value = E.holdings(referrer)

local now = E.now_ms()
local n = redis.call('HINCRBY', KEYS[1], 'paidReferrals', 1)
local entries = {{'referral:' .. referral, 'referral_bonus', 50000}}
if n % 5 == 0 then
  entries[2] = {'milestone:' .. referrer .. ':' .. E.int(n), 'referral_milestone', 10000 * n / 5}
end
local total = 0
for _, entry in ipairs(entries) do
  total = total + entry[3]
  local balance = redis.call('HINCRBY', KEYS[1], 'balanceCents', E.int(entry[3]))
  redis.call('XADD', E.OUTBOX, '*', 'ledger', string.format(
    '{"entryKey":"%s","userId":"%s","reason":"%s","amountCents":%d,"balanceAfterCents":%d,"referralId":"%s","atMs":%d}',
    entry[1], referrer, entry[2], entry[3], balance, referral, now))
end
redis.call('HINCRBY', KEYS[1], 'bonusCents', E.int(total))
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('SADD', E.UNBOXED, referrer)  -- his safe box is void (docs/decisions/0166)
redis.call('SET', KEYS[2], E.int(total) .. ':' .. E.int(n))
redis.call('XADD', E.OUTBOX, '*', 'wallet', referrer)
local w = E.wallet(referrer)
redis.call('PUBLISH', 'portfolio:' .. referrer, cjson.encode({type = 'portfolio',
  event = 'referral_bonus', wallet = E.wallet_json(w.balance, w.used, w.balance + value - w.cost)}))
return {1, total, n}

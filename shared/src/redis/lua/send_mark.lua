-- send_mark: may this action be delivered now? The mark holds one of
--   'sent'              delivered: record it, never send again
--   'sending:<ms>'      a delivery owns it until <ms> (epoch ms); past that
--                       its owner died or hangs and the outcome is unknown
--   'unknown:<ms>'      a delivery ended without knowing whether it landed
--                       (timeout, 5xx after the request left); busy until
--                       <ms>, so Pancake can finish before anyone looks
--   'free'              released: definitely not delivered (a definite
--                       failure, or handed off before it started)
--   'sending'           (before `sending:<ms>`) busy for as long as it lives
--   absent              never marked, or its mark expired
-- Returns 'sent' | 'busy' (someone owns it: wait, never counted as a
-- failure) | 'go' (mark taken: deliver) | 'unknown' (mark taken, but an
-- earlier attempt may have landed: look before sending, never blindly).
-- With 'go' or 'unknown' and an echo mark given, the text's echo counter is
-- raised before the send, so its webhook echo is recognised even when
-- Pancake's reply (and its message id) never arrives.
-- KEYS: 1 send mark of the action  [2 echo mark of the text]
-- ARGV: 1 now ms  2 ownership window ms  3 mark ttl s
--       4 '1' = an absent mark means unknown (the job comes from a sweep of
--           an answer whose holder may have died mid-send)
--       [5 echo ttl s]
local v = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[1])
local verdict
if v == 'sent' then
  return 'sent'
elseif v == 'free' then
  verdict = 'go'
elseif v == 'unknown' then
  verdict = 'unknown'
elseif v then
  local kind, until_ms = string.match(v, '^(%a+):(%d+)$')
  if kind == nil or tonumber(until_ms) > now then
    return 'busy'
  end
  verdict = 'unknown'
elseif ARGV[4] == '1' then
  verdict = 'unknown'
else
  verdict = 'go'
end
redis.call('SET', KEYS[1], 'sending:' .. string.format('%.0f', now + tonumber(ARGV[2])), 'EX', ARGV[3])
if KEYS[2] then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return verdict

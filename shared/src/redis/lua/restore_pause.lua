-- restore_pause: after a degraded period, a pause Postgres holds (an agent
-- replied, or an answer transferred to an agent, while Redis was away)
-- becomes the conversation's Redis pause too, so the bot does not talk over
-- the human once Redis answers again.
--
-- KEYS: 1 state (hash)
-- ARGV: 1 paused until (epoch ms)  2 now ms
--
-- Returns 1 when the pause was set, 0 when Redis already pauses as long or
-- longer (a pause is never shortened here) or the deadline has passed.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  return redis.error_reply('WRONGTYPE restore_pause: ' .. KEYS[1] .. ' holds a ' .. kind)
end
local until_ms = tonumber(ARGV[1])
local now_ms = tonumber(ARGV[2])
if until_ms <= now_ms or until_ms <= (tonumber(redis.call('HGET', KEYS[1], 'paused_until_ms')) or 0) then
  return 0
end
redis.call('HSET', KEYS[1], 'paused_until_ms', until_ms)
-- The state hash must outlive the pause (as admit's save_state does), or
-- its expiry would end the pause early. A new hash has no TTL yet (-1).
local needed = math.ceil((until_ms - now_ms) / 1000)
if redis.call('TTL', KEYS[1]) < needed then
  redis.call('EXPIRE', KEYS[1], needed)
end
return 1

-- claim: take the lock of a conversation with owed messages and no message
-- in hand (the background consumer's re-drive and webhook processing).
--
-- KEYS: 1 state  2 ctx  3 owed  4 lock  5 owed index
-- ARGV: 1 token  2 lock ttl ms  3 now ms  4 conversation id
--
-- Returns {'nothing'}       no owed messages (index entry dropped)
--       | {'bot_paused'}    a human took over: owed messages are theirs now
--       | {'locked'}        a live holder will cover them
--       | {'acquired', fence, ctx[], owed[], page_id, assistant_id}
local st = redis.call('HMGET', KEYS[1], 'paused_until_ms', 'fence', 'page_id', 'assistant_id')
local function acquired(fence)
  return {'acquired', fence, redis.call('ZRANGE', KEYS[2], 0, -1),
    redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES'), st[3] or '', st[4] or ''}
end
-- This very call ran before (a client re-sent it after a dropped
-- connection): the lock is already ours; answer as the first run did.
if redis.call('GET', KEYS[4]) == ARGV[1] then
  return acquired(st[2])
end
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[5], ARGV[4])
  return {'nothing'}
end
if (tonumber(st[1]) or 0) > tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[5], ARGV[4])
  return {'bot_paused'}
end
if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'locked'}
end
-- As in admit: max(last + 1, clock in microseconds).
local fence = math.max((tonumber(st[2]) or 0) + 1, tonumber(ARGV[3]) * 1000)
fence = string.format('%.0f', fence)
redis.call('HSET', KEYS[1], 'fence', fence, 'processing', '1', 'lock_since_ms', ARGV[3])
return acquired(fence)

-- complete: the lock holder's last step for one answer (trim_context.lua is
-- prepended: see scripts.rs).
--
-- KEYS: 1 lock  2 state  3 ctx  4 owed  5 jobs stream  6 owed index
--       7 .. 6+ARGV[16]  echo marks (counters) of the texts about to be sent,
--           so their webhook echoes are recognised before Pancake's message
--           ids are known
--       then  send marks of the actions about to be delivered ('sending'),
--           so no retry or sweep sends them a second time
-- ARGV: 1 token  2 highest owed seq the answer covers  3 final (1 = deliver
--       even if newer messages arrived)  4 answer context entry (JSON)
--       5 answer timestamp  6 answer job (JSON)  7 pause (1 = transfer_to_agent)
--       8 pause ttl s  9 context ttl s  10 context max entries  11 lock ttl ms
--       12 now ms  13 redrive job (JSON)  14 conversation id  15 echo ttl s
--       16 number of echo marks  17 how long the holder owns the send
--       marks (ms: `sending:<now + this>`, see send_mark.lua)  18 send mark ttl s
--
-- Returns {'lost'}                 the lock expired or was taken: discard the answer
--       | {'paused'}               a human took over meanwhile: discard, release
--       | {'newer', ctx[], owed[]}  newer customer messages: re-run, lock kept
--       | {'done', newer[]}         answer recorded, lock released; newer[] stay owed

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  -- Run before with this token (a client re-sent the script after a dropped
  -- connection): the answer was recorded, so say 'done' again — 'lost'
  -- would make the holder drop an answer that is already owed delivery.
  if redis.call('HGET', KEYS[2], 'done_token') == ARGV[1] then
    return {'done', redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[2], '+inf')}
  end
  return {'lost'}
end
-- An agent replied (or the conversation was assigned) during the AI call:
-- the bot must not talk over the human.
if (tonumber(redis.call('HGET', KEYS[2], 'paused_until_ms')) or 0) > tonumber(ARGV[12]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'processing', '0')
  return {'paused'}
end
local newer = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[2], '+inf')
if #newer > 0 and ARGV[3] ~= '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[11])
  return {'newer', redis.call('ZRANGE', KEYS[3], 0, -1), redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')}
end

redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[2])
if #newer == 0 then
  redis.call('ZREM', KEYS[6], ARGV[14])
end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
-- Messages still owed (they arrived after this answer) keep their entries.
trim_context(KEYS[3], owed_ids(newer), tonumber(ARGV[10]), 0)
-- No EXPIRE on the context here: admit refreshed it moments ago (2 h TTL).
local now_ms = tonumber(ARGV[12])
local fields = {'processing', '0', 'answered_seq', ARGV[2], 'last_answer_ms', now_ms, 'done_token', ARGV[1]}
if ARGV[7] == '1' then
  table.insert(fields, 'paused_until_ms'); table.insert(fields, now_ms + tonumber(ARGV[8]) * 1000)
end
redis.call('HSET', KEYS[2], unpack(fields))
if ARGV[7] == '1' then
  redis.call('EXPIRE', KEYS[2], math.max(tonumber(ARGV[8]), tonumber(ARGV[9])))
end
redis.call('DEL', KEYS[1])
local echoes = tonumber(ARGV[16])
for i = 7, 6 + echoes do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[15])
end
local owned_until = string.format('%.0f', now_ms + tonumber(ARGV[17]))
for i = 7 + echoes, #KEYS do
  redis.call('SET', KEYS[i], 'sending:' .. owned_until, 'EX', ARGV[18])
end
redis.call('XADD', KEYS[5], '*', 'type', 'persist_answer', 'payload', ARGV[6])
if #newer > 0 then
  -- The restart budget is spent: hand the still-owed messages to the
  -- background consumer so they are answered even if nothing else arrives.
  redis.call('XADD', KEYS[5], '*', 'type', 'redrive_conversation', 'payload', ARGV[13])
end
return {'done', newer}

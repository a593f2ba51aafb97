-- forget: after a degraded period, drop owed entries that Postgres already
-- answered (a message whose admit ran in Redis but whose reply was lost,
-- then retried and answered by the degraded path). Without this the sweep
-- would answer it a second time.
-- KEYS: 1 owed  2 owed index
-- ARGV: 1 conversation id  2.. message ids answered elsewhere
-- Returns the number of owed entries dropped.
local answered = {}
for i = 2, #ARGV do answered[ARGV[i]] = true end
local dropped = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ok, owed = pcall(cjson.decode, member)
  if ok and type(owed) == 'table' and answered[owed.message_id] then
    redis.call('ZREM', KEYS[1], member)
    dropped = dropped + 1
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return dropped

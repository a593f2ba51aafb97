-- cancel: force-release the lock and clear processing state (admin). Owed
-- messages stay owed so a re-drive can still answer them.
-- KEYS: 1 lock  2 state  3 owed   Returns {released (0|1), owed count}
local released = redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'processing', '0')
end
return {released, redis.call('ZCARD', KEYS[3])}

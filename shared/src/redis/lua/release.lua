-- release: give the lock back, only if we still hold it (a holder that
-- cannot proceed, e.g. its assistant could not be loaded).
-- KEYS: 1 lock  2 state   ARGV: 1 token   Returns 1 (released) | 0 (not ours)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'processing', '0')
  return 1
end
return 0

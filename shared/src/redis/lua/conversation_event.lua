-- conversation_event: apply a Pancake `conversation` webhook to the
-- conversation's state, in version order (older versions are ignored).
--
-- KEYS: 1 state  2 jobs stream
-- ARGV: 1 version  2 assigned (1 = assigned to a human)  3 now ms
--       4 pause ttl s  5 context ttl s  6 update job (JSON)
--
-- Returns 'stale' | 'paused' | 'resumed' | 'applied'
local st = redis.call('HMGET', KEYS[1], 'pancake_version', 'assigned')
if tonumber(ARGV[1]) <= (tonumber(st[1]) or -1) then
  return 'stale'
end
local fields = {'pancake_version', ARGV[1], 'assigned', ARGV[2]}
local result = 'applied'
if ARGV[2] == '1' then
  table.insert(fields, 'paused_until_ms'); table.insert(fields, tonumber(ARGV[3]) + tonumber(ARGV[4]) * 1000)
  result = 'paused'
elseif st[2] == '1' then
  -- Unassigned after being assigned: the human handed the conversation back.
  table.insert(fields, 'paused_until_ms'); table.insert(fields, 0)
  result = 'resumed'
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[4]), tonumber(ARGV[5])))
redis.call('XADD', KEYS[2], '*', 'type', 'update_conversation', 'payload', ARGV[6])
return result

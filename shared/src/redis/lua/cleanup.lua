-- cleanup: drop one conversation's Redis state if it is idle since before
-- the cutoff and nobody needs it: no lock, no owed messages, no pause in
-- force. Check and delete are one atomic step, so a message admitted in
-- between cannot be lost. The conversation's owed-index entry goes in the
-- same step, and only because the owed set is empty right now: removed by a
-- later command, it could take with it the entry of a message admitted in
-- between (admit adds it with ZADD NX), and the sweep would never find that
-- message. Postgres is never touched.
-- KEYS: 1 state  2 lock  3 ctx  4 owed  5 owed index (the shard's, same slot)
-- ARGV: 1 cutoff ms  2 now ms  3 conversation id (its owed-index member)
-- Returns the number of keys removed (0 = kept).
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local st = redis.call('HMGET', KEYS[1], 'updated_ms', 'paused_until_ms')
if (tonumber(st[1]) or 0) >= tonumber(ARGV[1]) then return 0 end
if (tonumber(st[2]) or 0) > tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('ZCARD', KEYS[4]) > 0 then return 0 end
local removed = redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[3])
return removed

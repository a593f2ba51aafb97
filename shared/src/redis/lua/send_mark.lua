-- send_mark: may this action be delivered now? 'sent' (it was: record it,
-- send nothing), 'busy' (a delivery is under way or died mid-send; retry
-- after the mark expires), or 'go' (marked 'sending' for us). With 'go' and
-- an echo mark given, the text's echo counter is raised too, before the
-- send, so its webhook echo is recognised even when Pancake's reply (and
-- its message id) never arrives.
-- KEYS: 1 send mark of the action  [2 echo mark of the text]
-- ARGV: 1 ttl s  [2 echo ttl s]
local v = redis.call('GET', KEYS[1])
if v == 'sent' then return 'sent' end
if v then return 'busy' end
redis.call('SET', KEYS[1], 'sending', 'EX', ARGV[1])
if KEYS[2] then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 'go'

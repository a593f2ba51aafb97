-- send_mark: may this action be delivered now? 'sent' (it was: record it,
-- send nothing), 'busy' (a delivery is under way or died mid-send; retry
-- after the mark expires), or 'go' (marked 'sending' for us).
-- KEYS: 1 send mark of the action   ARGV: 1 ttl s
local v = redis.call('GET', KEYS[1])
if v == 'sent' then return 'sent' end
if v then return 'busy' end
redis.call('SET', KEYS[1], 'sending', 'EX', ARGV[1])
return 'go'

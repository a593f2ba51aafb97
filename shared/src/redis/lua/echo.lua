-- echo: is a page-sent message one this backend sent? Either Pancake's
-- message id was recorded after delivery, or an echo mark of the text (a
-- counter `complete` raised before delivery) is left; one mark is consumed
-- per echo, and the id is remembered so a redelivered echo is known too.
-- KEYS: 1 sent:<pancake message id>  2 echo mark of the text
-- ARGV: 1 ttl s of the remembered id          Returns 1 | 0
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if (tonumber(redis.call('GET', KEYS[2])) or 0) > 0 then
  redis.call('DECR', KEYS[2])
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
  return 1
end
return 0

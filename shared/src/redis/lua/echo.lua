-- echo: is a page-sent message one this backend sent? Either Pancake's
-- message id was recorded after delivery, or the text's echo mark (set by
-- `complete` just before delivery) is still there; the mark is consumed.
-- KEYS: 1 sent:<pancake message id>  2 echo mark of the text   Returns 1 | 0
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
return redis.call('DEL', KEYS[2])

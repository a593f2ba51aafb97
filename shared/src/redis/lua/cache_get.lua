-- cache_get: a cache entry, valid only while the generations it was stored
-- under are current. Bumping a generation (INCR) invalidates every entry of a
-- kind, or of one scope (an assistant, a thread), in O(1).
--
-- KEYS: 1 kind generation  2 scope generation  3 entry   (one hash tag: the kind)
-- Returns {kind_gen, scope_gen, data | false}
local kg = redis.call('GET', KEYS[1]) or '0'
local sg = redis.call('GET', KEYS[2]) or '0'
local entry = redis.call('GET', KEYS[3])
if entry then
  local sep = string.find(entry, '|', 1, true)
  if sep and string.sub(entry, 1, sep - 1) == kg .. ':' .. sg then
    return {kg, sg, string.sub(entry, sep + 1)}
  end
end
return {kg, sg, false}

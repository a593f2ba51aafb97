-- page_rate: one page's sliding rate window, on its own key (its own hash
-- tag). Used instead of admit's in-script window when there are several job
-- shards (a cluster): a page's conversations live in different slots, and
-- one window per page must see all of them. Counts a customer message of
-- the page and says whether the page is over its limit.
-- KEYS: 1 the page's window (hash)
-- ARGV: 1 now ms  2 window ms  3 max
-- Returns 0 (within the limit; counted) | seconds until a slot frees up
local now_ms, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local p = redis.call('HMGET', KEYS[1], 'start', 'count', 'prev')
local start, count, prev = tonumber(p[1]) or now_ms, tonumber(p[2]) or 0, tonumber(p[3]) or 0
-- The same weighted sliding window as admit's.
local elapsed = now_ms - start
if elapsed >= 2 * window then
  start, count, prev = now_ms, 0, 0
elseif elapsed >= window then
  start, prev, count = start + window, count, 0
end
if count + prev * (1 - (now_ms - start) / window) >= max then
  return math.max(1, math.ceil((start + window - now_ms) / 1000))
end
redis.call('HSET', KEYS[1], 'start', start, 'count', count + 1, 'prev', prev)
redis.call('PEXPIRE', KEYS[1], 2 * window)
return 0

-- admit: one atomic step for every incoming message of one conversation
-- (trim_context.lua is prepended: see scripts.rs).
-- All KEYS share one hash tag: the conversation's job shard (see keys.rs),
-- so the script runs on Redis Cluster.
--
-- KEYS: 1 seen:<message_id>  2 state (hash)  3 ctx (zset by timestamp)
--       4 owed (zset by arrival seq)  5 lock  6 the shard's jobs stream
--       7 the shard's owed index (zset: conversations with owed messages,
--         for the stranded-burst sweep)  8 the page's rate window in this
--         shard (used with one shard only; see ARGV[22])
--       9 known mark (the conversation existed before; 30 days)
-- ARGV (names as in redis/store/admit_args.rs, whose test reads this list):
--    1 message_id
--    2 timestamp
--    3 context_entry      JSON
--    4 sender_kind        customer | agent | other
--    5 persist_job        JSON
--    6 lock_token
--    7 lock_ttl_ms
--    8 context_ttl_secs
--    9 dedupe_ttl_secs
--   10 rate_max
--   11 rate_window_ms
--   12 now_ms
--   13 pause_ttl_secs
--   14 owed_member       JSON
--   15 conversation_id
--   16 page_id           '' = unknown
--   17 assistant_id      '' = unknown
--   18 mode              'sync' (try the lock now) | 'defer' (enqueue a process job)
--                        | 'store' (recorded, never answered: reconciliation's old messages)
--   19 process_job       JSON, defer mode
--   20 page_rate_max     0 = off
--   21 known_ttl_secs
--   22 page_verdict      from page_rate.lua: '' = not limited or not checked;
--                        else seconds to wait
--   23 context_max       entries kept in the context (the newest)
--   24 context_max_bytes bytes of context kept (the newest entry always stays)
--
-- Returns {'duplicate'} | {'stored'} | {'unanswered'} | {'bot_paused'}
--       | {'rate_limited', secs, 'conversation' | 'page'}
--       | {'locked'} | {'queued'}
--       | {'acquired', fence, ctx[], owed[member, seq, ...], known ('1' | '0')}

-- Reads first, writes after: Lua does not roll back, so a command that can
-- fail (a key of the wrong type) must fail before anything is written —
-- never after the dedupe mark, which would turn the retry into a false
-- 'duplicate' and lose the message.
local seen = redis.call('GET', KEYS[1])
if seen then
  -- The mark names the call that admitted the message and its answer
  -- (`<lock token>|<outcome>|…`): a client that re-sends this very call
  -- after a dropped connection (the cluster client does) gets the same
  -- answer, not 'duplicate' — which would leave an admitted message
  -- unanswered by the request that holds its lock.
  local mine = ARGV[6] .. '|'
  if string.sub(seen, 1, #mine) ~= mine then
    return {'duplicate'}
  end
  local first = {}
  for part in string.gmatch(string.sub(seen, #mine + 1), '[^|]+') do table.insert(first, part) end
  if first[1] ~= 'acquired' then
    return first
  end
  if redis.call('GET', KEYS[5]) ~= ARGV[6] then
    return {'locked'}
  end
  return {'acquired', redis.call('HGET', KEYS[2], 'fence'), redis.call('ZRANGE', KEYS[3], 0, -1),
    redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES'), first[2]}
end
local expected = {[2] = 'hash', [3] = 'zset', [4] = 'zset', [5] = 'string', [6] = 'stream',
  [7] = 'zset', [8] = 'hash', [9] = 'string'}
for i, kind in pairs(expected) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('WRONGTYPE admit: ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
local now_ms = tonumber(ARGV[12])
local ts = tonumber(ARGV[2])
local st = redis.call('HMGET', KEYS[2], 'seq', 'last_message_ts', 'paused_until_ms',
  'rl_start_ms', 'rl_count', 'rl_prev', 'fence')
local protected = owed_ids(redis.call('ZRANGE', KEYS[4], 0, -1))
if ARGV[4] == 'customer' then protected[ARGV[1]] = true end

-- Dedupe: from here on, a repeated message_id changes nothing at all. The
-- mark is written by `done`, on every way out below, with the answer.
local function done(reply)
  local remembered = reply[1] == 'acquired' and {ARGV[6], 'acquired', reply[5]}
    or {ARGV[6], reply[1], reply[2], reply[3]}
  redis.call('SET', KEYS[1], table.concat(remembered, '|'), 'EX', ARGV[9])
  return reply
end
-- Whether this conversation was seen before (its history may be in Postgres
-- even if its Redis context expired): a brand-new one needs no rebuild.
local known = redis.call('SET', KEYS[9], '1', 'EX', ARGV[21], 'GET') and '1' or '0'
local seq = (tonumber(st[1]) or 0) + 1
local fields = {'seq', seq, 'updated_ms', now_ms}
-- Remembered so a re-drive knows where to answer and with which assistant.
if ARGV[16] ~= '' then table.insert(fields, 'page_id'); table.insert(fields, ARGV[16]) end
if ARGV[17] ~= '' then table.insert(fields, 'assistant_id'); table.insert(fields, ARGV[17]) end
-- Late messages are inserted into the context by timestamp, but never move
-- the conversation's "last message" backwards.
if ts >= (tonumber(st[2]) or -1) then
  table.insert(fields, 'last_message_id'); table.insert(fields, ARGV[1])
  table.insert(fields, 'last_message_ts'); table.insert(fields, ARGV[2])
end

redis.call('ZADD', KEYS[3], ts, ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[8])
-- Bounded here, whatever happens next: a paused, rate-limited or spamming
-- conversation never reaches complete's trim, and all of the context goes
-- to the AI. The newest ARGV[23] entries and ARGV[24] bytes, never an owed
-- message's entry, nor this one's if it may become owed (trim_context.lua).
trim_context(KEYS[3], protected, tonumber(ARGV[23]), tonumber(ARGV[24]))
-- Stored whatever happens next: rate limits and locks limit answers, never storage.
local function persist(outcome)
  redis.call('XADD', KEYS[6], '*', 'type', 'persist_message', 'outcome', outcome, 'payload', ARGV[5])
end
local function save_state(extra_ttl_s)
  redis.call('HSET', KEYS[2], unpack(fields))
  redis.call('EXPIRE', KEYS[2], math.max(tonumber(ARGV[8]), extra_ttl_s or 0))
end

local paused_until = tonumber(st[3]) or 0
if ARGV[18] == 'store' then
  -- Reconciliation of a message the webhook missed long enough ago that
  -- the bot must not answer it now: recorded (context, persistence), never
  -- owed; a customer's is `unanswered`, for the agents. A human's reply
  -- pauses the bot as its webhook would have, from when it was sent: only
  -- what is left of that pause, if anything.
  if ARGV[4] == 'agent' then
    local pause_end = math.floor(math.min(ts * 1000, now_ms) + tonumber(ARGV[13]) * 1000)
    if pause_end > paused_until and pause_end > now_ms then
      table.insert(fields, 'paused_until_ms'); table.insert(fields, pause_end)
      save_state(math.ceil((pause_end - now_ms) / 1000))
      persist('bot_paused')
      return done({'bot_paused'})
    end
  end
  local outcome = ARGV[4] == 'customer' and 'unanswered' or 'stored'
  save_state(math.ceil((paused_until - now_ms) / 1000))
  persist(outcome)
  return done({outcome})
end
if ARGV[4] == 'agent' then
  -- A human answered: the bot stays quiet until resumed or the pause times out.
  table.insert(fields, 'paused_until_ms'); table.insert(fields, now_ms + tonumber(ARGV[13]) * 1000)
  save_state(tonumber(ARGV[13]))
  persist('bot_paused')
  return done({'bot_paused'})
end
if ARGV[4] ~= 'customer' then
  save_state(math.ceil((paused_until - now_ms) / 1000))
  persist('stored')
  return done({'stored'})
end
if paused_until > now_ms then
  save_state(math.ceil((paused_until - now_ms) / 1000))
  persist('bot_paused')
  return done({'bot_paused'})
end

-- Sliding-window counters (the previous window weighted by its remaining
-- overlap): exact enough for abuse control, and the conversation's lives in
-- its state hash, costing no extra command.
local function slide(start, count, prev, window)
  start, count, prev = tonumber(start) or now_ms, tonumber(count) or 0, tonumber(prev) or 0
  local elapsed = now_ms - start
  if elapsed >= 2 * window then
    start, count, prev = now_ms, 0, 0
  elseif elapsed >= window then
    start, prev, count = start + window, count, 0
  end
  return start, count, prev, count + prev * (1 - (now_ms - start) / window)
end
local window = tonumber(ARGV[11])
-- Limited: not answered now, but stored and owed, so the conversation's
-- next answer covers it, and the sweep answers it once the window reopens
-- if nothing else arrives (its owed-index score is set so the sweep, which
-- takes entries older than a lock TTL, sees it then). The sender need not
-- resend (a resend is a harmless 'duplicate'). A flood is owed only up to
-- the context size (ARGV[23]): one answer covers a burst anyway, and owed
-- entries are never trimmed, so an unbounded flood would grow the context.
local function limited(secs, scope)
  if redis.call('ZCARD', KEYS[4]) < tonumber(ARGV[23]) then
    redis.call('ZADD', KEYS[4], seq, ARGV[14])
    redis.call('EXPIRE', KEYS[4], ARGV[8])
    redis.call('ZADD', KEYS[7], 'NX', now_ms + secs * 1000 - tonumber(ARGV[7]), ARGV[15])
  end
  save_state()
  persist('rate_limited')
  return done({'rate_limited', tostring(secs), scope})
end
local function wait_secs(start)
  return math.max(1, math.ceil((start + window - now_ms) / 1000))
end

local max = tonumber(ARGV[10])
if max > 0 then
  local start, count, prev, estimate = slide(st[4], st[5], st[6], window)
  if estimate >= max then
    for _, v in ipairs({'rl_start_ms', start, 'rl_count', count, 'rl_prev', prev}) do table.insert(fields, v) end
    return limited(wait_secs(start), 'conversation')
  end
  for _, v in ipairs({'rl_start_ms', start, 'rl_count', count + 1, 'rl_prev', prev}) do table.insert(fields, v) end
end
-- A page window checked before this script (several job shards, see
-- page_rate.lua): ARGV[22] is '' or the seconds until the page frees up.
if ARGV[22] ~= '' then
  return limited(tonumber(ARGV[22]), 'page')
end
-- Per page (KEYS[8]; ARGV[20] = its limit, 0 = off or no page): protects the
-- page's Pancake send quota from one busy page's burst of conversations.
local page_max = tonumber(ARGV[20])
if page_max > 0 then
  local p = redis.call('HMGET', KEYS[8], 'start', 'count', 'prev')
  local start, count, prev, estimate = slide(p[1], p[2], p[3], window)
  if estimate >= page_max then
    return limited(wait_secs(start), 'page')
  end
  redis.call('HSET', KEYS[8], 'start', start, 'count', count + 1, 'prev', prev)
  redis.call('PEXPIRE', KEYS[8], 2 * window)
end

-- Owed until an answer covers it (arrival order, not timestamp order).
redis.call('ZADD', KEYS[4], seq, ARGV[14])
redis.call('EXPIRE', KEYS[4], ARGV[8])
redis.call('ZADD', KEYS[7], 'NX', now_ms, ARGV[15])
persist('admitted')

if ARGV[18] == 'defer' then
  -- The webhook path: answer from the background consumer, not this request.
  save_state()
  redis.call('XADD', KEYS[6], '*', 'type', 'process_conversation', 'payload', ARGV[19])
  return done({'queued'})
end

if not redis.call('SET', KEYS[5], ARGV[6], 'NX', 'PX', ARGV[7]) then
  save_state()
  return done({'locked'})
end
-- Fencing numbers must only grow, also after the state hash expired and
-- across a degraded period in which Postgres handed them out: the clock in
-- microseconds, or one past the last number if that is higher (a hybrid
-- logical clock; Postgres' fallback takes max(its last + 1, clock) too).
local fence = math.max((tonumber(st[7]) or 0) + 1, now_ms * 1000)
for _, v in ipairs({'fence', fence, 'processing', '1', 'lock_since_ms', now_ms}) do table.insert(fields, v) end
save_state()
-- %.0f: tostring() would print a large fence in exponent notation.
return done({'acquired', string.format('%.0f', fence), redis.call('ZRANGE', KEYS[3], 0, -1),
  redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES'), known})

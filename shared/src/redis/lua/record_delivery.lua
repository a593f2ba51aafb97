-- record_delivery: what a delivery left behind, in one step, at most once
-- per recording. A caller that retries after a lost reply reuses its token:
-- the second run changes nothing, so it can never release a mark that a
-- later delivery has taken since (which would let an action be sent twice).
-- All KEYS share the conversation's job-shard hash tag.
--
-- KEYS: 1 this recording's guard  2 the shard's jobs stream
--       3 .. 2+n_marks: action send marks   then n_sent: `sent:<pancake id>`
-- ARGV: 1 guard ttl s  2 n_marks  3 n_sent  4 sent mark ttl s  5 dedupe ttl s
--       6 what an unknown outcome leaves: `unknown:<ms>` (no look-up before
--         then: Pancake may still be working on the send)
--       7 .. 6+n_marks: '1' delivered (mark `sent`) | '0' definitely not
--           delivered (mark `free`: the next attempt sends) | 'u' outcome
--           unknown (ARGV[6]: the next attempt looks first)
--       then (type, payload) pairs: the jobs to append
-- Returns 1 when recorded now, 0 when this token was recorded before.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local n_marks, n_sent = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n_marks do
  local state = ({['1'] = 'sent', ['0'] = 'free', ['u'] = ARGV[6]})[ARGV[6 + i]]
  redis.call('SET', KEYS[2 + i], state, 'EX', ARGV[4])
end
for i = 1, n_sent do
  redis.call('SET', KEYS[2 + n_marks + i], '1', 'EX', ARGV[5])
end
for i = 7 + n_marks, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'type', ARGV[i], 'payload', ARGV[i + 1])
end
-- Last: a step above that failed leaves no guard, so the retry runs it all.
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1

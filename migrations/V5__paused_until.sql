-- One pause with an explicit end (issue 11). Redis keeps a pause as
-- `paused_until_ms` in the conversation's state hash; Postgres now keeps the
-- same deadline here. `bot_paused` stays the flag "a human took over" (set
-- by an agent message, a `transfer_to_agent` answer or an assignment, cleared
-- by an operator's resume or an unassignment); degraded mode honours it only
-- while `paused_until` is in the future. Before this column, degraded mode
-- counted the pause from `updated_at`, which every stored message moves: an
-- agent's reply days ago silenced the bot for a whole outage.
ALTER TABLE conversations ADD COLUMN paused_until TIMESTAMPTZ;

-- Backfill, neither NULL for all nor `updated_at + 24 hours`: the latter is
-- the very bug above (an active conversation whose agent replied days ago
-- would be silenced for another day). Instead each paused conversation gets
-- the end of the pause its latest recorded pausing event started: its last
-- agent message or its last `transfer_to_agent` answer, plus the default
-- BOT_PAUSE_TTL_SECONDS (24 h; a migration cannot read the setting). Only
-- rows changed within the last 24 hours can still be paused (every pausing
-- event moved `updated_at`), which keeps the lookups few and indexed.
-- A pause set by an assignment alone has no recorded time and stays NULL:
-- not paused in degraded mode. Redis still holds every live pause, and the
-- conversation's next event sets the column.
UPDATE conversations AS c
   SET paused_until = GREATEST(
           (SELECT max(m.created_at) FROM messages m
             WHERE m.conversation_id = c.conversation_id AND m.sender_type = 'agent'),
           (SELECT max(r.created_at) FROM ai_responses r JOIN message_actions a ON a.response_id = r.id
             WHERE r.conversation_id = c.conversation_id AND a.action_type = 'transfer_to_agent')
       ) + interval '24 hours'
 WHERE c.bot_paused AND c.updated_at > now() - interval '24 hours';

-- Echo recognition from Postgres (the webhook while Redis is away, or a
-- send Redis has no mark for): an echo matched by its text is recorded in
-- its own column, apart from `pancake_message_id` (which only a send's
-- reply or a look-up writes), so an echo taken onto the wrong action of the
-- same words can never make a look-up disown the real send.
ALTER TABLE message_actions ADD COLUMN echo_message_id TEXT;

-- A conversation's recent actions, read for every page-sent message that
-- Redis does not recognise as an echo.
CREATE INDEX message_actions_by_conversation ON message_actions (conversation_id, created_at);

-- The background consumer: Pancake's conversation `version` (assignment
-- updates apply in version order) and when the bot last answered.
ALTER TABLE conversations
    ADD COLUMN pancake_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN last_answer_at  TIMESTAMPTZ;

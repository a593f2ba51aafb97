-- Dead letters replayed by an operator (POST /api/v1/admin/dead-letters/{id}/replay).
-- outcome: the admit outcome a persist_message entry carried (a replay puts
--   it back; NULL for letters recorded before this column, replayed as
--   `admitted`, the consumer's default).
-- replayed_at: set first, by a conditional UPDATE, so two replays cannot both
--   enqueue; cleared again if the enqueue fails.
-- replay_stream_id: the replayed entry's id, set once it is in the stream. A
--   row marked without one is a replay interrupted between the mark and the
--   enqueue: after a minute it may be replayed again (the jobs are idempotent).
-- message_actions.status has no CHECK constraint (V1), so the `unknown`
-- status needs no change here.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS outcome          text,
    ADD COLUMN IF NOT EXISTS replayed_at      timestamptz,
    ADD COLUMN IF NOT EXISTS replay_stream_id text;

-- Degraded mode (DESIGN §7): while Redis is unreachable, handle-message
-- stores messages directly and answers under a Postgres advisory lock.
--
-- `admitted_via` tells those messages apart: the degraded lock holder
-- answers every `postgres` customer message that no answer covers yet,
-- and never one admitted through Redis (that one is owed in Redis and
-- answered there; answering it here too would double the answer).
--
-- Added with a constant default first (no table rewrite), then the default
-- becomes the transaction-local setting the degraded writer sets
-- (`SET LOCAL switchboard.admitted_via = 'postgres'`), so the batch writer
-- shared by both paths needs no extra column.
ALTER TABLE messages ADD COLUMN admitted_via TEXT NOT NULL DEFAULT 'redis';
ALTER TABLE messages
    ALTER COLUMN admitted_via SET DEFAULT COALESCE(NULLIF(current_setting('switchboard.admitted_via', true), ''), 'redis');

-- The degraded holder's "what is still owed" query.
CREATE INDEX messages_admitted_via_postgres ON messages (conversation_id, created_at)
    WHERE admitted_via = 'postgres';

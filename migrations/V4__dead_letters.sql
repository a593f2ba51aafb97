-- Dead letters kept in Postgres: the Redis dead-letter streams are bounded
-- (MAXLEN) and trimmed by age, so this table is the record operators read.
-- Rows older than DEAD_LETTER_RETENTION_DAYS are deleted by the consumer's
-- sweep (they can hold personal data: the payload is the message).
CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial PRIMARY KEY,
    shard       integer     NOT NULL,
    stream_id   text        NOT NULL,
    job_type    text,
    payload     text,
    error       text        NOT NULL,
    deliveries  integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shard, stream_id)
);
CREATE INDEX IF NOT EXISTS dead_letters_created_at ON dead_letters (created_at);

-- Live chat's log: every message and answer of a conversation with its
-- per-conversation sequence number, assigned once (the row's key) and
-- carried by every push. Clients that reconnect or see a gap read it back
-- (`GET /api/v1/chat/conversations/{id}/messages?after_seq=N`).
--
-- A conversation's appends take its `chat_sequences` row lock first and
-- hold it until they commit, so sequence numbers become visible in order (a
-- reader never sees seq N+1 while N is still to come), and an appender
-- decides what is new only once it holds the lock (two writers of the same
-- message never both take a number): no number is skipped or reused.

CREATE TABLE chat_sequences (
    conversation_id TEXT PRIMARY KEY,
    last_seq        BIGINT NOT NULL
);

CREATE TABLE chat_messages (
    conversation_id   TEXT NOT NULL,
    seq               BIGINT NOT NULL,
    -- The message's id (`web:<client id>` for a customer's, `agent:<agent>:<client id>`
    -- for an agent's, Pancake's for a page's), or `bot:<response id>`.
    message_key       TEXT NOT NULL,
    -- customer, agent, bot, page, system.
    sender_type       TEXT NOT NULL,
    sender_id         TEXT NOT NULL DEFAULT '',
    client_message_id TEXT,
    content           TEXT NOT NULL,
    -- A bot answer's actions (quick replies, carousels) as seed 001 shows them.
    actions           JSONB NOT NULL DEFAULT '[]',
    -- Epoch seconds, as every timestamp of the API.
    created_at        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (conversation_id, message_key)
);

-- Conversations opened by `POST /api/v1/chat/sessions`: a customer token is
-- only minted for the customer a conversation belongs to.
CREATE TABLE chat_conversations (
    conversation_id TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    channel         TEXT NOT NULL DEFAULT 'web',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

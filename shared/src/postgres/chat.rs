//! Live chat's log in Postgres (`chat_messages`, migration V8): appends
//! that assign each message its per-conversation sequence number once,
//! reads after a sequence number, and the conversations web sessions
//! opened.
//!
//! [`append`] is idempotent by `(conversation_id, message_key)`: the chat
//! flow appends a customer's message before pushing it, the consumer appends
//! every message it persists, the pipeline appends an answer (and the
//! messages it covers, first) before pushing it — whichever comes first
//! assigns the number, the others change nothing. Only the fresh rows come
//! back, so only their writer pushes them.

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::writer::Batch;
use crate::jobs::{PersistAnswer, PersistMessage};

/// One message or answer to log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatEntry {
    pub conversation_id: String,
    #[serde(rename = "message_id")]
    pub message_key: String,
    pub sender_type: String,
    pub sender_id: String,
    pub client_message_id: Option<String>,
    /// The text (`message`, as in a `sendMessage` frame).
    #[serde(rename = "message")]
    pub content: String,
    pub actions: Value,
    /// Epoch seconds.
    pub created_at: f64,
}

/// A logged entry with its number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: ChatEntry,
}

/// Appends `entries` in the caller's transaction, in order: within a
/// conversation, a later entry gets a larger number. Returns the entries
/// that were not logged before, with their numbers.
///
/// The conversations' counter rows are locked first (in key order: no
/// deadlock between appenders), and only then — a new statement, a new
/// snapshot — is it decided which entries are new: a concurrent appender of
/// the same message has committed by then, so no number is taken for an
/// entry that turns out to be logged already. Outside a transaction the
/// lock would not last: use [`append_committed`].
pub async fn append(db: &impl GenericClient, entries: &[ChatEntry]) -> Result<Vec<ChatMessage>, tokio_postgres::Error> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut conversations: Vec<&str> = entries.iter().map(|e| e.conversation_id.as_str()).collect();
    conversations.sort_unstable();
    conversations.dedup();
    db.execute(
        "INSERT INTO chat_sequences AS s (conversation_id, last_seq)
         SELECT c, 0 FROM unnest($1::text[]) AS c ORDER BY c
         ON CONFLICT (conversation_id) DO UPDATE SET last_seq = s.last_seq",
        &[&conversations],
    )
    .await?;
    let column = |f: fn(&ChatEntry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
    let conversations = column(|e| Some(e.conversation_id.clone()));
    let keys = column(|e| Some(e.message_key.clone()));
    let senders = column(|e| Some(e.sender_type.clone()));
    let sender_ids = column(|e| Some(e.sender_id.clone()));
    let client_ids = column(|e| e.client_message_id.clone());
    let contents = column(|e| Some(e.content.clone()));
    let actions: Vec<Value> = entries.iter().map(|e| e.actions.clone()).collect();
    let times: Vec<f64> = entries.iter().map(|e| e.created_at).collect();
    // The counters are taken in conversation order (no deadlock between
    // two appenders), and held to commit (numbers visible in order).
    let rows = db
        .query(
            "WITH input AS (
                SELECT DISTINCT ON (conversation_id, message_key) *
                  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::float8[])
                       WITH ORDINALITY AS t(conversation_id, message_key, sender_type, sender_id, client_message_id, content, actions, created_at, ord)
                 ORDER BY conversation_id, message_key, ord
             ), fresh AS (
                SELECT i.* FROM input i
                 WHERE NOT EXISTS (SELECT 1 FROM chat_messages c
                                    WHERE c.conversation_id = i.conversation_id AND c.message_key = i.message_key)
             ), numbered AS (
                SELECT f.*, row_number() OVER (PARTITION BY conversation_id ORDER BY ord) AS n,
                       count(*) OVER (PARTITION BY conversation_id) AS total
                  FROM fresh f
             ), counters AS (
                INSERT INTO chat_sequences AS s (conversation_id, last_seq)
                SELECT conversation_id, max(total) FROM numbered GROUP BY conversation_id ORDER BY conversation_id
                ON CONFLICT (conversation_id) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
                RETURNING conversation_id, last_seq
             )
             INSERT INTO chat_messages (conversation_id, seq, message_key, sender_type, sender_id, client_message_id,
                                        content, actions, created_at)
             SELECT n.conversation_id, c.last_seq - n.total + n.n, n.message_key, n.sender_type, n.sender_id,
                    n.client_message_id, n.content, n.actions, n.created_at
               FROM numbered n JOIN counters c USING (conversation_id)
              ORDER BY n.conversation_id, n.n
             ON CONFLICT DO NOTHING
             RETURNING conversation_id, message_key, seq",
            &[&conversations, &keys, &senders, &sender_ids, &client_ids, &contents, &actions, &times],
        )
        .await?;
    let mut fresh: Vec<ChatMessage> = rows
        .iter()
        .filter_map(|row| {
            let (conversation, key): (&str, &str) = (row.get(0), row.get(1));
            let entry = entries.iter().find(|e| e.conversation_id == conversation && e.message_key == key)?;
            Some(ChatMessage { seq: row.get(2), entry: entry.clone() })
        })
        .collect();
    fresh.sort_by(|a, b| (&a.entry.conversation_id, a.seq).cmp(&(&b.entry.conversation_id, b.seq)));
    Ok(fresh)
}

/// [`append`] in a transaction of its own, committed.
pub async fn append_committed(
    client: &mut deadpool_postgres::Client,
    entries: &[ChatEntry],
) -> Result<Vec<ChatMessage>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let fresh = append(&*tx, entries).await?;
    tx.commit().await?;
    Ok(fresh)
}

/// The number and text an entry was logged with, if it was.
pub async fn logged(
    db: &impl GenericClient,
    conversation: &str,
    key: &str,
) -> Result<Option<(i64, String)>, tokio_postgres::Error> {
    let row = db
        .query_opt(
            "SELECT seq, content FROM chat_messages WHERE conversation_id = $1 AND message_key = $2",
            &[&conversation, &key],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Up to `limit` entries after `after_seq`, in order.
pub async fn after(
    db: &impl GenericClient,
    conversation: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<ChatMessage>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT seq, message_key, sender_type, sender_id, client_message_id, content, actions, created_at
               FROM chat_messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&conversation, &after_seq, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ChatMessage {
            seq: r.get(0),
            entry: ChatEntry {
                conversation_id: conversation.to_owned(),
                message_key: r.get(1),
                sender_type: r.get(2),
                sender_id: r.get(3),
                client_message_id: r.get(4),
                content: r.get(5),
                actions: r.get(6),
                created_at: r.get(7),
            },
        })
        .collect())
}

/// The newest number of a conversation (0 before its first message).
pub async fn last_seq(db: &impl GenericClient, conversation: &str) -> Result<i64, tokio_postgres::Error> {
    let row = db.query_opt("SELECT last_seq FROM chat_sequences WHERE conversation_id = $1", &[&conversation]).await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Records that `conversation` belongs to `customer` (a new web session);
/// an existing conversation keeps its customer. Returns its customer.
pub async fn open_conversation(
    db: &impl GenericClient,
    conversation: &str,
    customer: &str,
    channel: &str,
) -> Result<String, tokio_postgres::Error> {
    let row = db
        .query_one(
            "WITH new AS (
                INSERT INTO chat_conversations (conversation_id, customer_id, channel) VALUES ($1, $2, $3)
                ON CONFLICT (conversation_id) DO NOTHING RETURNING customer_id
             )
             SELECT customer_id FROM new UNION ALL
             SELECT customer_id FROM chat_conversations WHERE conversation_id = $1 LIMIT 1",
            &[&conversation, &customer, &channel],
        )
        .await?;
    Ok(row.get(0))
}

/// The customer a web conversation belongs to (`None`: not a web session's).
pub async fn customer_of(db: &impl GenericClient, conversation: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let row =
        db.query_opt("SELECT customer_id FROM chat_conversations WHERE conversation_id = $1", &[&conversation]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// The chat log's entries of a persistence batch: its messages, then its
/// answers (a conversation's answer follows the messages it covers in the
/// stream, and so in the log).
pub fn entries_of(batch: &Batch) -> Vec<ChatEntry> {
    let messages = batch.messages.iter().map(|row| message_entry(&row.job));
    messages.chain(batch.answers.iter().map(answer_entry)).collect()
}

/// A persisted message's entry.
pub fn message_entry(job: &PersistMessage) -> ChatEntry {
    ChatEntry {
        conversation_id: job.conversation_id.clone(),
        message_key: job.message_id.clone(),
        sender_type: chat_sender(&job.sender_type).to_owned(),
        sender_id: job.sender_id.clone(),
        client_message_id: job.metadata.get("client_message_id").and_then(Value::as_str).map(String::from),
        content: job.content.clone(),
        actions: Value::Array(Vec::new()),
        created_at: job.timestamp,
    }
}

/// An answer's entry: its text, and its actions as seed 001 shows them
/// (quick replies and carousels for a chat client to render).
pub fn answer_entry(answer: &PersistAnswer) -> ChatEntry {
    ChatEntry {
        conversation_id: answer.conversation_id.clone(),
        message_key: bot_key(&answer.response_id),
        sender_type: "bot".into(),
        sender_id: answer.assistant_id.clone(),
        client_message_id: None,
        content: answer.ai_response.response_text.clone(),
        actions: Value::Array(answer.actions.iter().map(|a| a.action.public_view()).collect()),
        created_at: answer.created_at,
    }
}

/// An answer's key in the log.
pub fn bot_key(response_id: &uuid::Uuid) -> String {
    format!("bot:{response_id}")
}

/// The log's sender types: seed 001's `user` is a customer.
pub fn chat_sender(sender_type: &str) -> &str {
    match sender_type {
        "user" => "customer",
        other => other,
    }
}

/// The Pancake page of a conversation Postgres knows (`None`: a web
/// conversation, or one not yet persisted).
pub async fn page_of(db: &impl GenericClient, conversation: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let row = db.query_opt("SELECT page_id FROM conversations WHERE conversation_id = $1", &[&conversation]).await?;
    Ok(row.and_then(|r| r.get(0)))
}

//! A conversation's past, read back from Postgres: the context a lock holder
//! rebuilds when Redis no longer has it, and which owed messages an answer
//! already covers (one answered while Redis was away must never be answered
//! again).

use tokio_postgres::GenericClient;

use crate::domain::{ContextEntry, ConversationId};

/// The conversation's latest messages and answers (newest `limit`), in no
/// particular order. Answers read back as `bot:<response id>`.
pub async fn load_history(
    db: &impl GenericClient,
    conversation: &ConversationId,
    limit: usize,
) -> Result<Vec<ContextEntry>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT message_id, sender_type, content, timestamp FROM messages WHERE conversation_id = $1
             UNION ALL
             SELECT 'bot:' || id::text, 'bot', response_text, extract(epoch FROM created_at)::float8
               FROM ai_responses WHERE conversation_id = $1
             ORDER BY 4 DESC LIMIT $2",
            &[&conversation.as_str(), &(limit as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ContextEntry { message_id: r.get(0), sender_type: r.get(1), content: r.get(2), timestamp: r.get(3) })
        .collect())
}

/// Which of `message_ids` an answer in Postgres already covers.
pub async fn answered_message_ids(
    db: &impl GenericClient,
    conversation: &ConversationId,
    message_ids: &[&str],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT o.message_id FROM unnest($2::text[]) AS o(message_id)
              WHERE EXISTS (SELECT 1 FROM ai_responses r
                             WHERE r.conversation_id = $1 AND o.message_id = ANY(r.covered_message_ids))",
            &[&conversation.as_str(), &message_ids],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

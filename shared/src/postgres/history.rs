//! A conversation's past, read back from Postgres: the context a lock holder
//! rebuilds when Redis no longer has it, and which owed messages an answer
//! already covers (one answered while Redis was away must never be answered
//! again).

use tokio_postgres::GenericClient;

use crate::domain::{ContextEntry, ConversationId};

/// The conversation's latest messages and answers (newest `limit`, and no
/// more than `max_bytes` of text unless a single entry is larger; 0 = no
/// byte bound), newest first. Answers read back as `bot:<response id>`.
pub async fn load_history(
    db: &impl GenericClient,
    conversation: &ConversationId,
    limit: usize,
    max_bytes: usize,
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
    let entries = rows.into_iter().map(|r| ContextEntry {
        message_id: r.get(0),
        sender_type: r.get(1),
        content: r.get(2),
        timestamp: r.get(3),
    });
    Ok(within_bytes(entries, max_bytes))
}

/// The newest entries (given newest first) whose text fits in `max_bytes`;
/// the newest always stays. 0 = no byte bound.
pub fn within_bytes(newest_first: impl IntoIterator<Item = ContextEntry>, max_bytes: usize) -> Vec<ContextEntry> {
    let mut total = 0;
    newest_first
        .into_iter()
        .enumerate()
        .take_while(|(i, entry)| {
            total += entry.content.len();
            max_bytes == 0 || *i == 0 || total <= max_bytes
        })
        .map(|(_, entry)| entry)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, bytes: usize) -> ContextEntry {
        ContextEntry { message_id: id.into(), sender_type: "user".into(), content: "x".repeat(bytes), timestamp: 1.0 }
    }

    #[test]
    fn history_is_cut_to_the_byte_bound_keeping_the_newest() {
        let kept = within_bytes([entry("c", 60), entry("b", 60), entry("a", 60)], 130);
        assert_eq!(kept.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(), ["c", "b"]);
        assert_eq!(within_bytes([entry("big", 500), entry("a", 1)], 100).len(), 1);
        assert_eq!(within_bytes([entry("b", 60), entry("a", 60)], 0).len(), 2);
    }
}

//! A conversation's past, read back from Postgres: the context a lock holder
//! rebuilds when Redis no longer has it, and which owed messages an answer
//! already covers (one answered while Redis was away must never be answered
//! again).

use tokio_postgres::GenericClient;

use crate::domain::{ContextEntry, ConversationId};

/// The conversation's latest messages and answers (newest `limit`, and no
/// more than `max_bytes` of text unless a single entry is larger; 0 = no
/// byte bound), newest first, never leaving out one of `owed` (their text is
/// what the AI must answer). Answers read back as `bot:<response id>`.
pub async fn load_history(
    db: &impl GenericClient,
    conversation: &ConversationId,
    limit: usize,
    max_bytes: usize,
    owed: &[&str],
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
    Ok(within_bytes(entries, max_bytes, owed))
}

/// The newest entries (given newest first) whose text fits in `max_bytes`,
/// plus every entry of `owed`; the newest always stays. 0 = no byte bound.
pub fn within_bytes(
    newest_first: impl IntoIterator<Item = ContextEntry>,
    max_bytes: usize,
    owed: &[&str],
) -> Vec<ContextEntry> {
    let mut total = 0;
    let mut kept = Vec::new();
    for entry in newest_first {
        let fits = max_bytes == 0 || kept.is_empty() || total + entry.content.len() <= max_bytes;
        if fits || owed.contains(&entry.message_id.as_str()) {
            total += entry.content.len();
            kept.push(entry);
        }
    }
    kept
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
        let ids = |kept: Vec<ContextEntry>| kept.into_iter().map(|e| e.message_id).collect::<Vec<_>>();
        assert_eq!(ids(within_bytes([entry("c", 60), entry("b", 60), entry("a", 60)], 130, &[])), ["c", "b"]);
        assert_eq!(ids(within_bytes([entry("big", 500), entry("a", 1)], 100, &[])), ["big"]);
        assert_eq!(within_bytes([entry("b", 60), entry("a", 60)], 0, &[]).len(), 2);
        // An owed message stays, however far past the bound.
        assert_eq!(ids(within_bytes([entry("c", 60), entry("b", 60), entry("a", 60)], 100, &["a"])), ["c", "a"]);
    }
}

//! Which Pancake messages Postgres already has, for reconciliation's walk
//! back through a conversation: stored messages (`messages`) and what the
//! bot sent (`message_actions`: Pancake's id of a send, or of an echo
//! matched by text). Redis' dedupe marks expire; these rows do not.

use std::collections::HashSet;

use tokio_postgres::GenericClient;

/// The ids among `ids` that Postgres holds for this conversation.
pub async fn known_message_ids(
    db: &impl GenericClient,
    conversation_id: &str,
    ids: &[String],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = db
        .query(
            "SELECT message_id FROM messages WHERE conversation_id = $1 AND message_id = ANY($2)
             UNION
             SELECT pancake_message_id FROM message_actions
              WHERE conversation_id = $1 AND pancake_message_id = ANY($2)
             UNION
             SELECT echo_message_id FROM message_actions
              WHERE conversation_id = $1 AND echo_message_id = ANY($2)",
            &[&conversation_id, &ids],
        )
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

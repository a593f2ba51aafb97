//! Echo recognition from Postgres: whether a page-sent message is the echo
//! of one the bot sent, when Redis' echo marks cannot say (Redis is away,
//! or the send was made while it was). What the bot sent is in
//! `message_actions`: Pancake's message id once known, and the text.

use tokio_postgres::GenericClient;

/// Whether `pancake_message_id` / `text` is the echo of a message the bot
/// sent in this conversation within `window_secs`. A match by text takes
/// Pancake's id onto that action, so each sent message accounts for one
/// echo only: a human who later types the same words is still a human.
pub async fn claim_echo(
    db: &impl GenericClient,
    conversation_id: &str,
    pancake_message_id: &str,
    text: &str,
    window_secs: f64,
) -> Result<bool, tokio_postgres::Error> {
    let rows = db
        .query(
            "WITH hit AS (
                 SELECT id FROM message_actions
                  WHERE conversation_id = $1
                    AND created_at > now() - make_interval(secs => $4)
                    AND (pancake_message_id = $2
                         OR (pancake_message_id IS NULL AND btrim(action_data->>'message') = btrim($3)))
                  ORDER BY pancake_message_id IS NULL, created_at
                  LIMIT 1
                    FOR UPDATE)
             UPDATE message_actions m SET pancake_message_id = COALESCE(m.pancake_message_id, $2)
               FROM hit WHERE m.id = hit.id
             RETURNING m.id",
            &[&conversation_id, &pancake_message_id, &text, &window_secs],
        )
        .await?;
    Ok(!rows.is_empty())
}

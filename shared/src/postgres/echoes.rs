//! Echo recognition from Postgres: whether a page-sent message is the echo
//! of one the bot sent, when Redis' echo marks cannot say (Redis is away,
//! or the send was made while it was). What the bot sent is in
//! `message_actions`: Pancake's message id once known (`pancake_message_id`,
//! from the send's reply or a look-up), the id of an echo matched by text
//! (`echo_message_id`, kept apart), and the action, whose text the caller
//! renders as it was sent.

use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::actions::Action;

/// Whether Pancake's message id is known in this conversation: the id of a
/// send (its reply or a look-up) or of an echo taken before.
pub async fn is_known_message(
    db: &impl GenericClient,
    conversation_id: &str,
    pancake_message_id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM message_actions
                             WHERE conversation_id = $1 AND (pancake_message_id = $2 OR echo_message_id = $2))",
            &[&conversation_id, &pancake_message_id],
        )
        .await?;
    Ok(row.get(0))
}

/// The conversation's actions of the last `window_secs` that may have been
/// sent and that nothing accounts for yet (no Pancake id, no echo taken),
/// newest first (an echo follows its send closely), at most 100.
pub async fn unaccounted_sends(
    db: &impl GenericClient,
    conversation_id: &str,
    window_secs: f64,
) -> Result<Vec<Action>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT id, action_type, action_data FROM message_actions
              WHERE conversation_id = $1 AND created_at > now() - make_interval(secs => $2)
                AND pancake_message_id IS NULL AND echo_message_id IS NULL
                -- Only what may have reached Pancake (a last attempt of
                -- unknown outcome is stored `failed`): not `not_sent`, `done`.
                AND status IN ('pending', 'retrying', 'sent', 'unknown', 'failed')
              ORDER BY created_at DESC LIMIT 100",
            &[&conversation_id, &window_secs],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let data: Value = row.get(2);
            Action {
                action_id: row.get(0),
                action_type: row.get(1),
                data: data.as_object().cloned().unwrap_or_default(),
            }
        })
        .collect())
}

/// Takes an echo onto the action it echoes (`echo_message_id`). `false`
/// when another echo took it first, so each sent message accounts for one
/// echo and a human who later types the same words is still a human.
pub async fn take_echo(
    db: &impl GenericClient,
    action_id: Uuid,
    pancake_message_id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let taken = db
        .execute(
            "UPDATE message_actions SET echo_message_id = $2
              WHERE id = $1 AND echo_message_id IS NULL AND pancake_message_id IS NULL",
            &[&action_id, &pancake_message_id],
        )
        .await?;
    Ok(taken == 1)
}

/// Whether Pancake's message `pancake_message_id` is known as the send of
/// another action than `action_id` (a look-up for one send must not take an
/// earlier send of the same words for it).
pub async fn sent_by_another(
    db: &impl GenericClient,
    conversation_id: &str,
    pancake_message_id: &str,
    action_id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM message_actions
                             WHERE conversation_id = $1 AND pancake_message_id = $2 AND id <> $3)",
            &[&conversation_id, &pancake_message_id, &action_id],
        )
        .await?;
    Ok(row.get(0))
}

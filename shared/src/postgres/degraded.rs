//! The statements of degraded mode (the message path while Redis is
//! unreachable; the flow is `crate::pipeline::degraded`): dedupe against the
//! `messages` key, pause and rate standing from the tables, the advisory
//! lock with bounded waits, the owed messages no answer covers, the fencing
//! number, and the pauses Redis learns once it is back.

use tokio_postgres::{GenericClient, error::SqlState};

use crate::domain::{ConversationId, OwedMessage};

/// A message already stored: how it came in and whether an answer covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// `redis` or `postgres` (migration V3).
    pub admitted_via: String,
    pub admit_outcome: String,
    pub covered: bool,
}

pub async fn stored_message(
    db: &impl GenericClient,
    conversation: &str,
    message_id: &str,
) -> Result<Option<StoredMessage>, tokio_postgres::Error> {
    let row = db
        .query_opt(
            "SELECT m.admitted_via, m.admit_outcome,
                    EXISTS (SELECT 1 FROM ai_responses r WHERE r.conversation_id = m.conversation_id
                                                           AND m.message_id = ANY(r.covered_message_ids))
               FROM messages m WHERE m.conversation_id = $1 AND m.message_id = $2",
            &[&conversation, &message_id],
        )
        .await?;
    Ok(row.map(|r| StoredMessage { admitted_via: r.get(0), admit_outcome: r.get(1), covered: r.get(2) }))
}

/// A message rate-limited in degraded mode, resent once the window allows:
/// admitted now (only from `rate_limited`, so a concurrent resend admits it once).
pub async fn readmit(
    db: &impl GenericClient,
    conversation: &str,
    message_id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let updated = db
        .execute(
            // Dated now: it is owed from now (the degraded holder answers
            // only messages of the last hour).
            "UPDATE messages SET admit_outcome = 'admitted', created_at = clock_timestamp()
              WHERE conversation_id = $1 AND message_id = $2 AND admit_outcome = 'rate_limited'",
            &[&conversation, &message_id],
        )
        .await?;
    Ok(updated == 1)
}

/// Whether the bot is paused (a human took over and the pause's deadline,
/// `paused_until`, is still ahead: `updated_at` moves with every stored
/// message, so it cannot date a pause) and how many customer messages were
/// admitted within the rate window.
pub async fn customer_standing(
    db: &impl GenericClient,
    conversation: &str,
    window_secs: f64,
) -> Result<(bool, i64), tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT COALESCE((SELECT bot_paused AND paused_until > now()
                                FROM conversations WHERE conversation_id = $1), false),
                    (SELECT count(*) FROM messages
                      WHERE conversation_id = $1 AND sender_type IN ('user', 'customer')
                        AND admit_outcome = 'admitted' AND created_at > now() - make_interval(secs => $2))",
            &[&conversation, &window_secs],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Marks the rows this transaction writes as admitted by Postgres (read by
/// the `messages` trigger of migration V3).
pub async fn admit_via_postgres(tx: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT set_config('switchboard.admitted_via', 'postgres', true)", &[]).await.map(drop)
}

/// Takes the conversation's advisory lock inside `tx`, waiting at most
/// `wait_ms`; Postgres cuts the session off once it idles `idle_ms` in the
/// transaction (a holder stuck mid-call releases the lock). `false`: the
/// wait timed out (another holder is answering).
pub async fn lock_conversation(
    tx: &impl GenericClient,
    conversation: &ConversationId,
    wait_ms: u128,
    idle_ms: u128,
) -> Result<bool, tokio_postgres::Error> {
    tx.execute(
        "SELECT set_config('lock_timeout', $1, true), set_config('idle_in_transaction_session_timeout', $2, true)",
        &[&wait_ms.to_string(), &idle_ms.to_string()],
    )
    .await?;
    match tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&conversation.as_str()]).await {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Customer messages admitted here within `horizon_secs` that no answer
/// covers yet, oldest first, numbered in arrival order.
pub async fn uncovered(
    db: &impl GenericClient,
    conversation: &ConversationId,
    horizon_secs: f64,
) -> Result<Vec<OwedMessage>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT m.message_id, m.timestamp FROM messages m
              WHERE m.conversation_id = $1 AND m.admitted_via = 'postgres' AND m.admit_outcome = 'admitted'
                AND m.created_at > now() - make_interval(secs => $2)
                AND NOT EXISTS (SELECT 1 FROM ai_responses r
                                 WHERE r.conversation_id = m.conversation_id
                                   AND m.message_id = ANY(r.covered_message_ids))
              ORDER BY m.created_at, m.timestamp, m.message_id",
            &[&conversation.as_str(), &horizon_secs],
        )
        .await?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| OwedMessage { message_id: r.get(0), timestamp: r.get(1), seq: i as i64 + 1 })
        .collect())
}

/// The next fencing number: `max(last + 1, clock in µs)`, the rule the Redis
/// scripts use, so numbers grow across a switch in either direction.
pub async fn next_fence(tx: &impl GenericClient, conversation: &ConversationId) -> Result<i64, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "SELECT GREATEST(COALESCE((SELECT fence FROM conversations WHERE conversation_id = $1), 0) + 1,
                             (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)",
            &[&conversation.as_str()],
        )
        .await?
        .get(0))
}

/// The pauses in force for `conversations`, as Redis keeps them: one entry
/// per conversation asked about, with the deadline in epoch milliseconds, or
/// `None` when the bot is not paused there (or Postgres does not know the
/// conversation). Read once Redis is back, so that a human who took over
/// while it was away is not talked over.
pub async fn pauses(
    db: &impl GenericClient,
    conversations: &[&str],
) -> Result<Vec<(String, Option<i64>)>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT q.id, CASE WHEN c.bot_paused AND c.paused_until > now()
                               THEN (extract(epoch FROM c.paused_until) * 1000)::int8 END
               FROM unnest($1::text[]) AS q(id) LEFT JOIN conversations c ON c.conversation_id = q.id",
            &[&conversations],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

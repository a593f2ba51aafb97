//! The operators' reads and writes: the figures of `GET /admin/stats`, the
//! conversation and action listings (keyset-paginated), the health probe's
//! count, and an operator's resume.

use serde_json::{Map, Value, json};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// The Postgres half of the stats.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub conversations: i64,
    pub recent: i64,
    pub old: i64,
    pub bot_paused: i64,
    pub messages: i64,
    pub ai_responses: i64,
    pub customers: i64,
    pub avg_processing_time_ms_24h: f64,
    pub responses_24h: i64,
    pub errors_24h: i64,
    /// Action counts by status.
    pub actions_by_status: Map<String, Value>,
}

/// Counts for the stats page; conversations whose last message is at or
/// after `recent_since` (epoch seconds) are recent.
pub async fn figures(db: &impl GenericClient, recent_since: f64) -> Result<Figures, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE last_message_timestamp >= $1),
                    COUNT(*) FILTER (WHERE last_message_timestamp < $1 OR last_message_timestamp IS NULL),
                    COUNT(*) FILTER (WHERE bot_paused),
                    (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM ai_responses),
                    (SELECT COUNT(*) FROM customers),
                    (SELECT COALESCE(AVG(processing_time_ms), 0)::float8 FROM ai_responses WHERE created_at > now() - interval '24 hours'),
                    (SELECT COUNT(*) FROM ai_responses WHERE created_at > now() - interval '24 hours'),
                    (SELECT COUNT(*) FROM ai_responses WHERE created_at > now() - interval '24 hours' AND error IS NOT NULL)
               FROM conversations",
            &[&recent_since],
        )
        .await?;
    let actions = db.query("SELECT status, COUNT(*) FROM message_actions GROUP BY status", &[]).await?;
    Ok(Figures {
        conversations: row.get(0),
        recent: row.get(1),
        old: row.get(2),
        bot_paused: row.get(3),
        messages: row.get(4),
        ai_responses: row.get(5),
        customers: row.get(6),
        avg_processing_time_ms_24h: row.get(7),
        responses_24h: row.get(8),
        errors_24h: row.get(9),
        actions_by_status: actions.into_iter().map(|r| (r.get::<_, String>(0), json!(r.get::<_, i64>(1)))).collect(),
    })
}

/// The health probe: how many conversations Postgres holds.
pub async fn conversation_count(db: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(db.query_one("SELECT COUNT(*) FROM conversations", &[]).await?.get(0))
}

/// One conversation as the listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub last_message_id: Option<String>,
    /// 0 when the conversation has no message yet (the listing's sort key).
    pub last_message_timestamp: f64,
    pub status: String,
    pub bot_paused: bool,
    pub total_messages: i64,
    pub page_id: Option<String>,
}

/// A page of the listing, newest first: the total matching `status`
/// (`active`, `ended`, `paused`, `unanswered` or all) and up to `limit`
/// rows strictly after the keyset position `(after_ts, after_id)` in that
/// order. `unanswered`: the conversation's last message is a customer's
/// that reconciliation stored without an answer (nobody has replied since).
pub async fn conversation_page(
    db: &impl GenericClient,
    status: Option<&str>,
    after: Option<(f64, &str)>,
    limit: i64,
) -> Result<(i64, Vec<ConversationRow>), tokio_postgres::Error> {
    let filter = "($1::text IS NULL OR ($1 = 'paused' AND bot_paused)
                   OR ($1 = 'unanswered' AND EXISTS (
                        SELECT 1 FROM messages m
                         WHERE m.conversation_id = conversations.conversation_id
                           AND m.message_id = conversations.last_message_id AND m.admit_outcome = 'unanswered'))
                   OR ($1 NOT IN ('paused', 'unanswered') AND status = $1))";
    let total: i64 =
        db.query_one(&format!("SELECT COUNT(*) FROM conversations WHERE {filter}"), &[&status]).await?.get(0);
    // The first page starts above every real key.
    let (after_ts, after_id) = after.unwrap_or((f64::INFINITY, "\u{10FFFF}"));
    let rows = db
        .query(
            &format!(
                "SELECT conversation_id, last_message_id, COALESCE(last_message_timestamp, 0)::float8, status, bot_paused,
                        total_messages, page_id
                   FROM conversations
                  WHERE {filter}
                    AND (COALESCE(last_message_timestamp, 0), conversation_id) < ($2::float8, $3::text)
                  ORDER BY COALESCE(last_message_timestamp, 0) DESC, conversation_id DESC
                  LIMIT $4"
            ),
            &[&status, &after_ts, &after_id, &limit],
        )
        .await?;
    let rows = rows
        .iter()
        .map(|r| ConversationRow {
            conversation_id: r.get(0),
            last_message_id: r.get(1),
            last_message_timestamp: r.get(2),
            status: r.get(3),
            bot_paused: r.get(4),
            total_messages: r.get(5),
            page_id: r.get(6),
        })
        .collect();
    Ok((total, rows))
}

/// Bot back on in Postgres: the pause (flag and deadline) and the
/// assignment cleared. `false` when Postgres does not know the conversation.
pub async fn resume(db: &impl GenericClient, conversation: &str) -> Result<bool, tokio_postgres::Error> {
    let updated = db
        .execute(
            "UPDATE conversations SET bot_paused = FALSE, paused_until = NULL, assigned_to = '{}', updated_at = now()
              WHERE conversation_id = $1",
            &[&conversation],
        )
        .await?;
    Ok(updated == 1)
}

/// One action as the operators' listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub id: Uuid,
    pub response_id: Uuid,
    pub conversation_id: String,
    pub action_type: String,
    pub data: Value,
    pub status: String,
    pub retry_count: i32,
    pub last_error: Option<String>,
    pub pancake_message_id: Option<String>,
    /// Epoch seconds.
    pub created_at: f64,
    /// Epoch seconds.
    pub updated_at: f64,
    /// `updated_at` in whole microseconds since the epoch: the exact keyset
    /// position (a float of seconds would not round-trip).
    pub updated_micros: i64,
}

/// Up to `limit` actions with `status`, most recently changed first,
/// strictly after the keyset position `(updated µs, id)` in that order.
pub async fn actions_page(
    db: &impl GenericClient,
    status: &str,
    before: Option<(i64, Uuid)>,
    limit: i64,
) -> Result<Vec<ActionRow>, tokio_postgres::Error> {
    let (micros, id) = before.map_or((None, None), |(m, id)| (Some(m), Some(id)));
    let rows = db
        .query(
            "SELECT id, response_id, conversation_id, action_type, action_data, status, retry_count, last_error,
                    pancake_message_id, extract(epoch FROM created_at)::float8,
                    extract(epoch FROM updated_at)::float8, round(extract(epoch FROM updated_at) * 1000000)::int8
               FROM message_actions
              WHERE status = $1
                AND ($2::int8 IS NULL
                     OR (updated_at, id) < (timestamptz 'epoch' + $2::int8 * interval '1 microsecond', $3::uuid))
              ORDER BY updated_at DESC, id DESC
              LIMIT $4",
            &[&status, &micros, &id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ActionRow {
            id: r.get(0),
            response_id: r.get(1),
            conversation_id: r.get(2),
            action_type: r.get(3),
            data: r.get(4),
            status: r.get(5),
            retry_count: r.get(6),
            last_error: r.get(7),
            pancake_message_id: r.get(8),
            created_at: r.get(9),
            updated_at: r.get(10),
            updated_micros: r.get(11),
        })
        .collect())
}

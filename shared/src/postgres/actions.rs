//! Actions the consumer's sweep must settle: answers whose holder died
//! between `complete` and delivery left their actions `pending`.

use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{actions::Action, jobs::DeliverAction};

/// A `retrying` action untouched this long lost its delivery job (every
/// attempt records a result; a busy wait lasts one delivery window): the
/// sweep queues it again. Far past any retry schedule, so a live retry is
/// never doubled (and its send mark would stop it anyway).
pub const STUCK_RETRYING_SECS: f64 = 3_600.0;

/// Up to `limit` actions still `pending` `older_than_secs` after their
/// answer, or `retrying` and untouched for [`STUCK_RETRYING_SECS`], as the
/// delivery jobs that retry them (the attempt after their last). Their holder may have
/// died mid-send, so the jobs say so (`holder_may_have_sent`).
pub async fn undelivered(
    db: &impl GenericClient,
    older_than_secs: f64,
    limit: i64,
) -> Result<Vec<DeliverAction>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT m.id, m.response_id, m.conversation_id, m.action_type, m.action_data, c.page_id, r.fence,
                    extract(epoch FROM r.created_at)::float8, m.retry_count
               FROM message_actions m JOIN ai_responses r ON r.id = m.response_id
               LEFT JOIN conversations c ON c.conversation_id = r.conversation_id
              WHERE (m.status = 'pending' AND m.created_at < now() - make_interval(secs => $1))
                 OR (m.status = 'retrying' AND m.updated_at < now() - make_interval(secs => $3))
              LIMIT $2",
            &[&older_than_secs, &limit, &STUCK_RETRYING_SECS],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let data: Value = row.get(4);
            DeliverAction {
                response_id: row.get(1),
                conversation_id: row.get(2),
                page_id: row.get(5),
                fence: row.get(6),
                action: Action {
                    action_id: row.get(0),
                    action_type: row.get(3),
                    data: data.as_object().cloned().unwrap_or_default(),
                },
                // Past earlier attempts: the writer keeps the newest attempt's result.
                attempt: u32::try_from(row.get::<_, i32>(8)).unwrap_or(0) + 1,
                answered_at: row.get(7),
                holder_may_have_sent: true,
            }
        })
        .collect())
}

/// Flips enqueued actions from `pending` to `retrying` (after the enqueue: a
/// crash in between leaves them `pending`, found again by the next sweep).
pub async fn mark_retrying(db: &impl GenericClient, ids: &[Uuid]) -> Result<(), tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    db.execute(
        "UPDATE message_actions SET status = 'retrying', updated_at = now()
          WHERE id = ANY($1) AND status IN ('pending', 'retrying')",
        &[&ids],
    )
    .await
    .map(drop)
}

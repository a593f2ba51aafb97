//! Dead letters for operators: `GET /api/v1/admin/dead-letters` lists the
//! recorded ones (Postgres, newest first, paged by id) and
//! `POST /api/v1/admin/dead-letters/{id}/replay` puts one back on its
//! conversation's `jobs` stream, so the consumer runs it again (once the
//! cause is fixed).
//!
//! A replay never enqueues twice on purpose: the row is marked first by a
//! conditional update (a second replay gets `409`), then the job is
//! enqueued; if the enqueue fails the mark is undone, so the replay can be
//! retried. What remains are windows that can enqueue a job twice, never
//! none: an `XADD` that ran but whose reply was lost (the mark is undone,
//! the retry enqueues again), and a process that dies between the mark and
//! the enqueue (the mark, never confirmed with a stream id, may be replayed
//! again after [`STALE_REPLAY_SECS`]). Both are safe because every job is
//! idempotent: messages by `(conversation_id, message_id)`, answers by
//! response id, actions and their results by action id (and their `sent`
//! marks), conversation updates by Pancake's version, and a re-drive answers
//! only what is still owed.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{page_limit, query_param};
use crate::{
    App,
    consumer::replayable,
    domain::ConversationId,
    error::AppError,
    postgres::dead_letters::{self as rows, StoredLetter},
    response::json_response,
};

/// How long a replay marked but never confirmed (its process died before
/// the enqueue) blocks another: far longer than one enqueue can take.
pub const STALE_REPLAY_SECS: f64 = 60.0;

fn view(stored: &StoredLetter) -> Value {
    let letter = &stored.letter;
    // The payload is JSON when the producer wrote JSON; a poison entry's is shown as it came.
    let payload = letter
        .payload
        .as_deref()
        .map(|p| serde_json::from_str::<Value>(p).unwrap_or_else(|_| Value::String(p.to_owned())));
    let mut out = json!({
        "id": stored.id,
        "shard": letter.shard,
        "stream_id": letter.stream_id,
        "job_type": letter.job_type,
        "payload": payload,
        "error": letter.error,
        "deliveries": letter.deliveries,
        "created_at": stored.created_at,
    });
    if let Some(outcome) = &letter.outcome {
        out["outcome"] = json!(outcome);
    }
    if let Some(at) = stored.replayed_at {
        out["replayed_at"] = json!(at);
        out["replay_stream_id"] = json!(stored.replay_stream_id);
    }
    out
}

pub async fn list(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let limit = page_limit(request)?;
    let before = match query_param(request, "before") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| AppError::invalid("before", "must be a dead letter id (a positive integer)"))?,
        ),
    };
    let client = app.db.get().await?;
    let letters = rows::page(&**client, before, limit).await?;
    let total = rows::count(&**client).await?;
    drop(client);
    let next = (letters.len() as i64 == limit).then(|| letters.last().map(|l| l.id)).flatten();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "total": total,
            "dead_letters": letters.iter().map(view).collect::<Vec<_>>(),
            "next_before": next,
        }),
    ))
}

fn letter_id(id: &str) -> Result<i64, AppError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| AppError::invalid("id", "must be a dead letter id (a positive integer)"))
}

pub async fn replay(app: &App, id: &str) -> Result<Response<Bytes>, AppError> {
    let id = letter_id(id)?;
    let client = app.db.get().await?;
    let stored = rows::get(&**client, id).await?.ok_or(AppError::NotFound)?;
    let letter = &stored.letter;
    if stored.replay_stream_id.is_some() {
        return Err(AppError::Conflict(format!("dead letter {id} was already replayed")));
    }
    // What the consumer could not run at all, it would dead-letter again at once.
    let kind = letter
        .job_type
        .as_deref()
        .ok_or_else(|| AppError::Conflict(format!("dead letter {id} cannot be replayed: it has no job type")))?;
    let payload = letter
        .payload
        .as_deref()
        .ok_or_else(|| AppError::Conflict(format!("dead letter {id} cannot be replayed: it has no payload")))?;
    let conversation = replayable(kind, payload)
        .map_err(|why| AppError::Conflict(format!("dead letter {id} cannot be replayed: {why}")))?;
    let conversation = ConversationId::parse(&conversation).map_err(|_| {
        AppError::Conflict(format!("dead letter {id} cannot be replayed: its conversation_id is not a valid id"))
    })?;

    // A delivery replayed days later may find its send mark gone (kept 7
    // days): its outcome is then unknown, so it looks before it sends.
    let payload = &unsure_delivery(kind, payload);

    let Some(marked_at) = rows::mark_replayed(&**client, id, STALE_REPLAY_SECS).await? else {
        return Err(AppError::Conflict(format!("dead letter {id} was already replayed")));
    };
    let stream_id = match app.store.enqueue_replay(&conversation, kind, payload, letter.outcome.as_deref()).await {
        Ok(stream_id) => stream_id,
        Err(err) => {
            // Undone so the operator can retry; if this fails too, the mark
            // goes stale and the replay is allowed again after a minute.
            if let Err(undo) = rows::unmark_replayed(&**client, id, marked_at).await {
                tracing::warn!(id, error = %undo, "replay mark not undone; replayable again once stale");
            }
            return Err(err);
        }
    };
    // The job is in the stream whatever happens now: a confirmation lost
    // here only lets the replay be repeated once the mark is stale (safe,
    // see above), so it is logged, not reported as a failure.
    if let Err(err) = rows::confirm_replayed(&**client, id, &stream_id).await {
        tracing::warn!(id, error = %err, "replay enqueued but not confirmed in postgres");
    }
    tracing::info!(id, job_type = kind, stream_id = %stream_id, "dead letter replayed by an operator");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "id": id,
            "job_type": kind,
            "conversation_id": conversation.as_str(),
            "shard": app.store.keys().shard_of(&conversation),
            "replay_stream_id": stream_id,
            "replayed_at": marked_at,
        }),
    ))
}

/// A `deliver_action` payload marked `holder_may_have_sent` (any other job
/// as it is).
fn unsure_delivery(kind: &str, payload: &str) -> String {
    if kind != crate::jobs::DELIVER_ACTION {
        return payload.to_owned();
    }
    match serde_json::from_str::<crate::jobs::DeliverAction>(payload) {
        // Only a message can be looked for; an unsafe call would be recorded
        // `unknown` and never run, even if it never ran.
        Ok(mut job) if job.action.customer_text().is_some() => {
            job.holder_may_have_sent = true;
            serde_json::to_string(&job).unwrap_or_else(|_| payload.to_owned())
        }
        _ => payload.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_delivery_looks_before_it_sends_and_other_jobs_are_untouched() {
        let job = serde_json::json!({"response_id": uuid::Uuid::nil(), "conversation_id": "c", "page_id": "p",
            "fence": 1, "attempt": 3, "action": {"action_id": uuid::Uuid::nil(), "type": "send_message", "data": {"message": "hi"}}});
        let replayed: serde_json::Value =
            serde_json::from_str(&unsure_delivery(crate::jobs::DELIVER_ACTION, &job.to_string())).unwrap();
        assert_eq!(replayed["holder_may_have_sent"], true);
        assert_eq!(unsure_delivery("persist_message", "{\"x\":1}"), "{\"x\":1}");
    }
}

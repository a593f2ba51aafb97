//! Conversation control: `POST /api/v1/admin/conversations/{id}/cancel`
//! (force-release a stuck lock, clear processing state, answer what is owed), `…/{id}/resume` (bot back on) and
//! `POST /api/v1/admin/system/cleanup?max_age_hours=24` (drop old conversation
//! state from Redis — never from Postgres — and report counts).

use http::{Request, Response, StatusCode};
use serde_json::json;

use super::query_param;
use crate::{
    App, clock::now_epoch_seconds, clock::now_ms, domain::ConversationId, error::AppError, jobs, jobs::Redrive,
    pipeline, response::json_response,
};

fn conversation(id: &str) -> Result<ConversationId, AppError> {
    ConversationId::parse(id)
}

pub async fn cancel(app: &App, id: &str) -> Result<Response<bytes::Bytes>, AppError> {
    let conversation = conversation(id)?;
    let (released, owed) = app.store.cancel(&conversation).await?;
    // Owed answers are not dropped: they are answered now, in this request,
    // or — if that fails — by the background consumer.
    let mut answered = false;
    let mut enqueued = false;
    if owed > 0 {
        match pipeline::redrive(app, &conversation, None, None).await {
            Ok(outcome) => answered = outcome.is_some(),
            Err(err) => {
                tracing::warn!(conversation_id = %id, error = %err, "re-drive after cancel failed; enqueued");
                let job = Redrive {
                    conversation_id: id.to_owned(),
                    page_id: None,
                    assistant_id: None,
                    reason: "admin_cancel".into(),
                    handed_off: false,
                };
                let payload = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
                app.store.enqueue(&conversation, jobs::PROCESS_CONVERSATION, &payload).await?;
                enqueued = true;
            }
        }
    }
    tracing::info!(conversation_id = %id, released, owed, answered, "conversation cancelled by an operator");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "conversation_id": id,
            "lock_released": released,
            "owed_messages": owed,
            "owed_answered": answered,
            "redrive_enqueued": enqueued,
            "timestamp": now_epoch_seconds(),
        }),
    ))
}

/// Postgres first, then Redis: a `503` from either leaves the call safe to
/// repeat (both writes are idempotent).
pub async fn resume(app: &App, id: &str) -> Result<Response<bytes::Bytes>, AppError> {
    let conversation = conversation(id)?;
    let known = crate::postgres::admin::resume(&**app.db.get().await?, id).await?;
    app.store.resume(&conversation).await?;
    tracing::info!(conversation_id = %id, "bot resumed by an operator");
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "conversation_id": id, "bot_paused": false, "known_in_postgres": known}),
    ))
}

pub async fn cleanup(app: &App, request: &Request<bytes::Bytes>) -> Result<Response<bytes::Bytes>, AppError> {
    let hours: f64 = match query_param(request, "max_age_hours") {
        None => 24.0,
        Some(v) => v
            .parse()
            .ok()
            .filter(|h: &f64| h.is_finite() && *h >= 0.0 && *h <= 24.0 * 365.0)
            .ok_or_else(|| AppError::invalid("max_age_hours", "must be a number of hours from 0 to 8760"))?,
    };
    let cutoff = now_ms().saturating_sub((hours * 3_600_000.0) as u64);
    let (scanned, removed, keys) = app.store.cleanup(cutoff).await?;
    tracing::info!(scanned, removed, keys, hours, "cleanup");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "max_age_hours": hours,
            "conversations_scanned": scanned,
            "conversations_removed": removed,
            "keys_removed": keys,
            "postgres_touched": false,
        }),
    ))
}

//! HTTP handlers. Each authenticates, validates at the edge (nothing is
//! written before both pass), runs the pipeline and shapes seed 001's
//! response.

use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::{
    App,
    auth::require_bearer,
    clock::now_epoch_seconds,
    domain::IncomingMessage,
    error::{AppError, AuthFailure},
    jobs::newer_messages,
    pipeline::{self, Answered, Backend, Outcome},
    response::json_response,
};

/// `POST /api/v1/enhanced-handle-message` (seed 001), processed synchronously.
pub async fn enhanced_handle_message(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let started = Instant::now();
    // Unset (a function that does not read the Pancake secret) refuses all.
    let expected = app
        .config
        .pancake_access_token
        .as_ref()
        .ok_or(AppError::Unauthorized { reason: AuthFailure::NotConfigured })?;
    require_bearer(request.headers(), expected)?;
    let message = IncomingMessage::parse(request.body(), app.config.max_message_bytes)?;
    crate::metrics::conversation(message.conversation_id.as_str());
    let message_id = message.message_id.as_str();
    let (outcome, backend) = pipeline::handle(app, &message).await?;
    crate::metrics::handled(status_name(&outcome));
    let backend = backend.as_str();
    tracing::info!(
        conversation_id = %message.conversation_id,
        message_id,
        status = status_name(&outcome),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "message handled"
    );
    let result = match outcome {
        Outcome::Completed(answered) => {
            let mut result = answered_view(&answered, backend);
            result["status"] = json!("completed");
            result["message_id"] = json!(message_id);
            result
        }
        Outcome::RestartNeeded { newer, current } => json!({
            "status": "restart_needed",
            "message_id": message_id,
            "newer_messages": newer_messages(&newer),
            "current_result": answered_view(&current, backend),
            "covered_message_ids": current.covered_message_ids,
            "storage_backend": backend,
            "distributed_lock_used": true,
        }),
        Outcome::Locked => json!({
            "status": "locked",
            "reason": "processing_in_progress",
            "message_id": message_id,
            "storage_backend": backend,
        }),
        Outcome::LockLost => json!({
            "status": "locked",
            "reason": "lock_expired_result_discarded",
            "message_id": message_id,
            "storage_backend": backend,
        }),
        Outcome::Duplicate => json!({
            "status": "duplicate",
            "reason": "message_id_already_received",
            "message_id": message_id,
            "storage_backend": backend,
        }),
        Outcome::BotPaused => json!({
            "status": "bot_paused",
            "reason": "human_agent_handling_conversation",
            "message_id": message_id,
            "storage_backend": backend,
        }),
        Outcome::Stored => json!({
            "status": "stored",
            "reason": "not_a_customer_message",
            "message_id": message_id,
            "storage_backend": backend,
        }),
        Outcome::RateLimited { retry_after_secs, scope } => {
            // Through Redis: stored and owed, answered by the conversation's
            // next answer or by the sweep once the window reopens. 202, not
            // 429: a 429 asks the sender to resend, and a resend is only a
            // `duplicate`. In degraded mode no sweep runs: the message is
            // stored, and a resend after the window is answered.
            let owed = backend == Backend::Redis.as_str();
            let result = json!({
                "status": "rate_limited",
                "reason": format!("{scope}_rate_limit"),
                "message_id": message_id,
                "stored": true,
                "will_be_answered": owed,
                "resend": !owed,
                "answer_after_seconds": retry_after_secs,
                "storage_backend": backend,
            });
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({
                    "success": true,
                    "result": result,
                    "timestamp": now_epoch_seconds(),
                    "processing_time_ms": crate::clock::elapsed_ms(started.elapsed()),
                }),
            ));
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "result": result,
            "timestamp": now_epoch_seconds(),
            "processing_time_ms": crate::clock::elapsed_ms(started.elapsed()),
        }),
    ))
}

fn answered_view(answered: &Answered, backend: &str) -> Value {
    json!({
        "ai_response": answered.ai_response,
        "extracted_actions": answered.actions.iter().map(|a| a.public_view()).collect::<Vec<_>>(),
        "rejected_actions": answered.rejected,
        "pancake_result": answered.pancake_result,
        "covered_message_ids": answered.covered_message_ids,
        "response_id": answered.response_id,
        "fence": answered.fence,
        "restarts": answered.restarts,
        "storage_backend": backend,
        "distributed_lock_used": true,
    })
}

fn status_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed(_) => "completed",
        Outcome::RestartNeeded { .. } => "restart_needed",
        Outcome::Duplicate => "duplicate",
        Outcome::Stored => "stored",
        Outcome::BotPaused => "bot_paused",
        Outcome::RateLimited { .. } => "rate_limited",
        Outcome::Locked | Outcome::LockLost => "locked",
    }
}

//! Both ends of the hand-off ([`crate::handoff`]): sending a conversation to
//! be answered at once, with the `jobs` stream behind it, and answering one
//! that arrives (the `process-conversation` function, the gateway's inline
//! tasks).
//!
//! Lost or doubled? A send that fails is followed by an unflagged
//! `process_conversation` entry the consumer runs at once; one that arrives
//! twice (Lambda retries an asynchronous invocation whose run failed) or
//! arrives beside the consumer's safety-net run only claims the lock again
//! and finds nothing owed.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::{Outcome, redrive};
use crate::{
    App,
    domain::ConversationId,
    error::AppError,
    jobs::{self, Redrive},
};

/// Sends `job` (already in the stream as a `handed_off` entry) to be
/// answered at once. Never fails: when the send does, an entry the consumer
/// runs at once takes its place; if even that cannot be written, the
/// flagged entry is run after `CONSUMER_CLAIM_IDLE_MS`.
pub async fn hand_off(app: &App, conversation: &ConversationId, job: &Redrive) {
    let Err(err) = app.handoff.send(job).await else { return };
    tracing::warn!(conversation_id = %conversation, error = %err, "hand-off failed; the consumer answers instead");
    let fallback = Redrive { handed_off: false, reason: format!("{}_handoff_failed", job.reason), ..job.clone() };
    let queued = match serde_json::to_string(&fallback) {
        Ok(payload) => app.store.enqueue(conversation, jobs::PROCESS_CONVERSATION, &payload).await,
        Err(_) => Err(AppError::Internal),
    };
    if let Err(err) = queued {
        tracing::warn!(
            conversation_id = %conversation, error = %err,
            "fallback entry not written; the safety-net entry is answered after the claim idle time"
        );
    }
}

/// Queues a conversation for answering in the background: through the
/// hand-off when one is configured (a flagged entry behind it), else an
/// entry the consumer runs at once.
pub async fn queue(app: &App, conversation: &ConversationId, kind: &str, job: Redrive) -> Result<(), AppError> {
    let job = Redrive { handed_off: app.handoff.is_on(), ..job };
    let payload = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
    app.store.enqueue(conversation, kind, &payload).await?;
    if job.handed_off {
        hand_off(app, conversation, &job).await;
    }
    Ok(())
}

/// What answering one handed-off conversation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answering {
    /// Answered (its answer recorded and delivered, or handed on).
    Answered,
    /// Nothing owed, paused, or another holder covers it.
    NothingToDo,
}

/// Answers the conversation `job` names: the handler of the
/// `process-conversation` function and of the gateway's inline hand-offs.
/// An error leaves the messages owed (the stream's entry, or Lambda's
/// retry, answers them later).
pub async fn answer(app: &App, job: &Redrive) -> Result<Answering, AppError> {
    let conversation = ConversationId::parse(&job.conversation_id)
        .map_err(|_| AppError::invalid("conversation_id", "must be a valid conversation id"))?;
    let outcome = redrive(app, &conversation, job.page_id.as_deref(), job.assistant_id.as_deref()).await?;
    Ok(match outcome {
        Some(Outcome::Completed(_) | Outcome::RestartNeeded { .. }) => Answering::Answered,
        _ => Answering::NothingToDo,
    })
}

/// The local gateway's end of an inline hand-off: each conversation
/// answered in a task of its own, at most `HANDOFF_CONCURRENCY` at once.
/// Runs until every sender is dropped.
pub async fn serve_inline(app: App, mut jobs: mpsc::UnboundedReceiver<Redrive>) {
    let permits = Arc::new(Semaphore::new(app.config.handoff_concurrency));
    while let Some(job) = jobs.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(&app, &job).await {
                tracing::warn!(conversation_id = %job.conversation_id, error = %err, "inline hand-off failed; the consumer answers it");
            }
            drop(permit);
        });
    }
}

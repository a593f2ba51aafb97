//! The message pipeline: admit → process (AI, actions, complete, restarts) →
//! deliver, for one validated message (DESIGN §6). [`handle`] only chooses
//! the path: Redis (`redis_path`) while the circuit breaker is closed,
//! Postgres ([`degraded`]) while it is open.
//!
//! - `redis_path`: admit, the lock holder's loop (heartbeat, complete,
//!   restarts), and the background re-drive;
//! - `ai_call`: one AI call, counted in Redis while in flight and timed;
//! - `answer`: the AI call behind the answer cache, turned into a draft
//!   (validated actions, the persistence job) either path records;
//! - `delivery`: executing the actions against Pancake and the integrations;
//! - [`degraded`]: the whole path from Postgres, with its bookkeeping for the
//!   lazy rebuild of Redis.
//!
//! Ordering that keeps messages and answers from being lost or doubled:
//! - the persistence job is enqueued inside the admit script, atomically with
//!   the dedupe mark (a retried request can never find its message "seen" but
//!   not enqueued);
//! - nothing is sent to Pancake before `complete` confirmed that we still hold
//!   the lock; an answer discarded by `complete` was never shown to anyone;
//! - the answer job is enqueued inside `complete`, atomically with the release;
//! - actions are delivered after the release, and their results enqueued
//!   after delivery; a crash in between leaves the actions `pending` in the
//!   answer job for the consumer's retry (with the action id as idempotency key).
//!
//! All of it runs inside the request: a Lambda is frozen after it answers.

mod ai_call;
mod answer;
mod chat_log;
pub mod degraded;
mod delivery;
pub mod handoff;
pub mod page;
mod redis_path;

use serde_json::Value;
use uuid::Uuid;

pub use answer::min_round_time;
pub use delivery::{blank_result, execute, execute_unsure, mark_after};
pub use redis_path::{process, redrive};

use crate::{
    App,
    actions::{Action, RejectedAction},
    domain::{IncomingMessage, OwedMessage},
    error::{AppError, RateScope},
    jobs::AiResponseView,
};

/// One delivered answer.
#[derive(Debug, Clone)]
pub struct Answered {
    pub response_id: Uuid,
    pub fence: i64,
    pub ai_response: AiResponseView,
    pub actions: Vec<Action>,
    pub rejected: Vec<RejectedAction>,
    pub pancake_result: Value,
    /// Every customer message this answer covers (the request's and the burst's).
    pub covered_message_ids: Vec<String>,
    pub restarts: u32,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Completed(Answered),
    /// The restart budget was spent: `current` was delivered; `newer` stay owed
    /// (handed to the background re-drive).
    RestartNeeded {
        newer: Vec<OwedMessage>,
        current: Answered,
    },
    Duplicate,
    Stored,
    BotPaused,
    RateLimited {
        retry_after_secs: u64,
        scope: RateScope,
    },
    /// Another invocation holds the conversation; it will cover this message.
    Locked,
    /// Our lock expired while we worked and another processor took over: our
    /// result was discarded, the newer holder covers the message.
    LockLost,
}

/// Which store a message went through: seed 001's `storage_backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    /// Degraded mode: Redis unreachable, the breaker open.
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "Redis",
            Self::Postgres => "Postgres",
        }
    }
}

/// Runs one validated message through the whole path.
pub async fn handle(app: &App, message: &IncomingMessage) -> Result<(Outcome, Backend), AppError> {
    handle_signalled(app, message, None).await
}

/// As [`handle`], telling `admitted` once the message is recorded (on the
/// Redis path, when admit returns; on the degraded path, when Postgres has
/// it) — before the answer is made. Dropped unsent: not admitted.
pub async fn handle_signalled(
    app: &App,
    message: &IncomingMessage,
    admitted: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(Outcome, Backend), AppError> {
    if app.store.breaker().is_open() {
        if !app.config.degraded_mode {
            return Err(AppError::Unavailable { dependency: "redis" });
        }
        let outcome = degraded::handle(app, message).await?;
        if let Some(admitted) = admitted {
            let _ = admitted.send(());
        }
        return Ok((outcome, Backend::Postgres));
    }
    redis_path::handle(app, message, admitted).await.map(|outcome| (outcome, Backend::Redis))
}

//! A message from Pancake (its webhook, or reconciliation reading its API)
//! admitted: [`is_echo`] recognises the bot's own sends, [`admit`] runs the
//! admit script with the persistence job and, to answer, the
//! `process_conversation` job — one path for both, so dedupe makes either
//! a repeat of the other.
//!
//! When Redis cannot take it: the same message, stored and answered from
//! Postgres (degraded mode), because Pancake never redelivers an event it
//! was refused and suspends a webhook that keeps failing. Echoes of what
//! the bot sent are recognised from Postgres (`message_actions` holds
//! Pancake's ids and the texts), so the bot's own message never passes for
//! a human taking over.

use super::{
    Outcome,
    degraded::{self, both_down},
};
use crate::{
    App,
    clock::now_epoch_seconds,
    domain::{ConversationId, IncomingMessage},
    error::AppError,
    jobs::{PersistMessage, Redrive, UpdateConversation},
    postgres::{echoes, writer},
    redis::{Admission, AdmitMode},
};

/// Whether an admitted Pancake message is to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Owed, with a `process_conversation` job naming `reason` (a human's
    /// message pauses the bot from now).
    Yes { reason: &'static str },
    /// Recorded only ([`AdmitMode::Store`]): a human's message pauses the
    /// bot from when it was sent, as its webhook would have.
    No,
}

/// Whether a page-sent message is the echo of one the bot sent: Redis'
/// marks first, then Postgres' record of the sends (Redis has no mark for
/// a send made while it was away). If Postgres cannot say, it is not one
/// (it counts as a human's).
pub async fn is_echo(app: &App, message: &IncomingMessage) -> Result<bool, AppError> {
    if app.store.is_echo(&message.conversation_id, message.message_id.as_str(), &message.message_content).await? {
        return Ok(true);
    }
    Ok(is_echo_in_postgres(app, message).await.unwrap_or(false))
}

/// Admits one message of `page_id` through the admit script, with its
/// persistence job (the consumer writes it to Postgres) and, answered, its
/// `process_conversation` job (the consumer answers it).
pub async fn admit(app: &App, page_id: &str, message: &IncomingMessage, answer: Answer) -> Result<Admission, AppError> {
    let mut persist = PersistMessage::of(message);
    let process = match answer {
        Answer::Yes { reason } => Some(Redrive {
            conversation_id: message.conversation_id.to_string(),
            page_id: Some(page_id.to_owned()),
            assistant_id: None,
            reason: reason.into(),
            // With a hand-off the entry admit writes is only the safety net.
            handed_off: app.handoff.is_on(),
        }),
        Answer::No => {
            // Postgres' pause of a human's message runs from this time.
            persist.received_at = message.timestamp.min(now_epoch_seconds());
            None
        }
    };
    let persist = serde_json::to_string(&persist).map_err(|_| AppError::Internal)?;
    let process_job = process.as_ref().map(serde_json::to_string).transpose().map_err(|_| AppError::Internal)?;
    let mode = match &process_job {
        Some(process_job) => AdmitMode::Defer { process_job },
        None => AdmitMode::Store,
    };
    let admission = app.store.admit(message, &persist, mode).await?;
    if let Some(process) = process.filter(|p| p.handed_off && admission == Admission::Queued) {
        super::handoff::hand_off(app, &message.conversation_id, &process).await;
    }
    Ok(admission)
}

/// How far back a sent message can still be echoed: as long as Redis'
/// echo marks last (a retried send's echo can come late).
const ECHO_WINDOW_SECS: f64 = 3_600.0;

/// Whether a page-sent message is the echo of one the bot sent, by
/// Postgres' record: Pancake's id for a send, or the text of a send no echo
/// has claimed yet (rendered as it was sent: quick replies and carousels
/// as numbered text). `Err` only when Postgres cannot say.
pub async fn is_echo_in_postgres(app: &App, message: &IncomingMessage) -> Result<bool, AppError> {
    let client = app.db.get().await?;
    let (conversation, id) = (message.conversation_id.as_str(), message.message_id.as_str());
    if echoes::is_known_message(&**client, conversation, id).await? {
        return Ok(true);
    }
    let text = message.message_content.trim();
    for sent in echoes::unaccounted_sends(&**client, conversation, ECHO_WINDOW_SECS).await? {
        if sent.customer_text().is_some_and(|t| t.trim() == text)
            && echoes::take_echo(&**client, sent.action_id, id).await?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A webhook message while Redis is away: an echo is ignored; anything
/// else goes through the degraded path (stored, and answered if it is a
/// customer's; a human's pauses the bot). Returns the webhook's status.
/// Postgres down too: `503`, nothing written.
pub async fn degraded_message(
    app: &App,
    message: &IncomingMessage,
    sent_by_page: bool,
) -> Result<&'static str, AppError> {
    if sent_by_page && is_echo_in_postgres(app, message).await.map_err(both_down)? {
        return Ok("ignored_echo");
    }
    Ok(match degraded::handle(app, message).await? {
        Outcome::Completed(_) | Outcome::RestartNeeded { .. } => "answered",
        Outcome::Duplicate => "duplicate",
        Outcome::BotPaused if sent_by_page => "human_replied_bot_paused",
        Outcome::BotPaused => "bot_paused",
        Outcome::RateLimited { .. } => "rate_limited",
        Outcome::Stored => "stored",
        Outcome::Locked | Outcome::LockLost => "queued",
    })
}

/// A conversation event while Redis is away: written to Postgres directly
/// (an assignment pauses the bot there; degraded mode honours it).
pub async fn degraded_update(app: &App, update: &UpdateConversation) -> Result<(), AppError> {
    let batch = writer::Batch { updates: vec![update.clone()], ..writer::Batch::default() };
    let mut client = app.db.get().await.map_err(AppError::from).map_err(both_down)?;
    let fresh = writer::write(&mut client, &batch, app.config.bot_pause_ttl)
        .await
        .map_err(AppError::from)
        .map_err(both_down)?;
    app.live.publish(&fresh, None).await;
    // Redis learns an assignment's pause when it returns. (An unassignment
    // does not shorten a pause Redis holds: Redis may know a newer one.)
    if let Ok(conversation) = ConversationId::parse(&update.conversation_id) {
        app.store.remember_degraded_pause(&conversation);
    }
    Ok(())
}

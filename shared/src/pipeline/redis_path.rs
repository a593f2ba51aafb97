//! The Redis path: admit (one script), then the lock holder's loop — the
//! answer under a heartbeat, `complete` (restarting with a fuller context
//! while newer messages arrive, up to the budget), delivery — and the same
//! loop with no message in hand for the background re-drive.

use std::future::Future;

use uuid::Uuid;

use super::{
    Answered, Outcome,
    answer::{self, Draft},
    delivery,
};
use crate::{
    App,
    actions::Action,
    ai::AiRequest,
    cache::CacheKind,
    deadline,
    domain::{Assistant, ConversationId, IncomingMessage, OwedMessage, Snapshot},
    error::AppError,
    jobs::{self, PersistMessage, Redrive},
    postgres::history,
    redis::{Admission, AdmitMode, AnswerRecord, Claim, Completion, Lease},
};

/// Admits the message in Redis and, holding the lock, answers it;
/// `admitted` is told as soon as admit has recorded the message (the live
/// chat's ack waits for it).
pub(super) async fn handle(
    app: &App,
    message: &IncomingMessage,
    admitted: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<Outcome, AppError> {
    // Back from a degraded period: Redis learns what Postgres handled
    // meanwhile before it admits anything else (a no-op otherwise).
    super::degraded::restore_redis(app).await;
    let job = PersistMessage::of(message);
    let job = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
    // The assistant is resolved while admit runs (one round trip instead of
    // two in a row); only a message that takes the lock uses it.
    let (assistant_id, page) = (message.assistant_id(), message.page_id());
    let (admission, assistant) = tokio::join!(
        app.store.admit(message, &job, AdmitMode::Sync),
        app.assistants.resolve(assistant_id.as_deref(), page.as_deref())
    );
    let admission = admission?;
    if let Some(admitted) = admitted {
        let _ = admitted.send(());
    }
    match admission {
        Admission::Duplicate => Ok(Outcome::Duplicate),
        Admission::Stored => Ok(Outcome::Stored),
        Admission::BotPaused => Ok(Outcome::BotPaused),
        Admission::RateLimited { retry_after_secs, scope } => Ok(Outcome::RateLimited { retry_after_secs, scope }),
        Admission::Locked | Admission::Queued => Ok(Outcome::Locked),
        Admission::Acquired { lease, snapshot } => {
            let assistant = match assistant {
                Ok(a) => a,
                Err(err) => {
                    // Give the lock back at once so the next message (or the
                    // sender's retry) is not stuck behind a dead holder.
                    let _ = app.store.release(&message.conversation_id, &lease).await;
                    return Err(err);
                }
            };
            let page_id = message.delivery_page(&assistant.page_ids);
            process(app, &message.conversation_id, &lease, snapshot, &assistant, page_id.as_deref()).await
        }
    }
}

/// Answers a conversation's owed messages with no message in hand: the
/// background consumer's re-drive of stranded bursts and of webhook
/// messages. `None` when there was nothing to do (nothing owed, paused, or a
/// live holder will cover it).
pub async fn redrive(
    app: &App,
    conversation: &ConversationId,
    page_id: Option<&str>,
    assistant_id: Option<&str>,
) -> Result<Option<Outcome>, AppError> {
    let Claim::Acquired { lease, mut snapshot, page_id: known_page, assistant_id: known_assistant } =
        app.store.claim(conversation).await?
    else {
        return Ok(None);
    };
    // A message still owed here may have been answered from Postgres while
    // Redis was away (by any process): never answer it twice. One Postgres
    // read on this background path only; if it fails, the check is skipped.
    let answered = answered_in_postgres(app, conversation, &snapshot.owed).await;
    if let Err(err) = &answered {
        tracing::warn!(conversation_id = %conversation, error = %err, "could not check owed messages against Postgres");
    }
    if let Ok(answered) = answered
        && !answered.is_empty()
    {
        let _ = app.store.forget_answered(conversation, &answered).await;
        snapshot.owed.retain(|m| !answered.contains(&m.message_id));
        if snapshot.owed.is_empty() {
            let _ = app.store.release(conversation, &lease).await;
            return Ok(None);
        }
    }
    let assistant_id = assistant_id.map(String::from).or(known_assistant);
    let page_id = page_id.map(String::from).or(known_page);
    let assistant = match app.assistants.resolve(assistant_id.as_deref(), page_id.as_deref()).await {
        Ok(a) => a,
        Err(err) => {
            let _ = app.store.release(conversation, &lease).await;
            return Err(err);
        }
    };
    let page_id = crate::domain::delivery_page(conversation, page_id, &assistant.page_ids);
    process(app, conversation, &lease, snapshot, &assistant, page_id.as_deref()).await.map(Some)
}

/// Which of `owed` an answer in Postgres already covers.
async fn answered_in_postgres(
    app: &App,
    conversation: &ConversationId,
    owed: &[OwedMessage],
) -> Result<Vec<String>, AppError> {
    let ids: Vec<&str> = owed.iter().map(|m| m.message_id.as_str()).collect();
    Ok(history::answered_message_ids(&**app.db.get().await?, conversation, &ids).await?)
}

/// The lock holder's work: ask, complete (restarting while newer messages
/// arrive, up to the budget), deliver.
pub async fn process(
    app: &App,
    conversation: &ConversationId,
    lease: &Lease,
    mut snapshot: Snapshot,
    assistant: &Assistant,
    page_id: Option<&str>,
) -> Result<Outcome, AppError> {
    let config = &app.config;
    if !config.debounce.is_zero() {
        // Let a burst settle, then work from the fuller context.
        if with_heartbeat(app, conversation, lease, tokio::time::sleep(config.debounce)).await.is_none() {
            return Ok(Outcome::LockLost);
        }
        snapshot = app.store.snapshot(conversation).await?;
    }
    rebuild_thread(app, conversation, &mut snapshot).await;
    let round = answer::round_time(app);
    if !deadline::allows(answer::min_round_time(app)) {
        // Not even a short round fits before the invocation ends: hand the
        // conversation to the background re-drive now rather than be cut
        // off mid-way (its messages stay owed; the lock is given back).
        tracing::warn!(conversation_id = %conversation, "too close to the deadline to answer; handed to the re-drive");
        hand_to_redrive(app, conversation, lease, page_id, assistant).await?;
        return Ok(Outcome::Locked);
    }
    let mut restarts = 0;
    loop {
        let request = AiRequest {
            assistant,
            conversation_id: conversation.as_str(),
            context: &snapshot.context,
            pending: &snapshot.owed,
        };
        // Near the deadline the AI gets what is left before delivery's
        // share; past it the round is abandoned (nothing was recorded) and
        // handed to the re-drive, rather than cut off by the invocation's end.
        let asked = answer::answer(app, assistant, request);
        let bounded = async {
            match answer::ai_budget(app) {
                Some(budget) => tokio::time::timeout(budget, asked).await.ok(),
                None => Some(asked.await),
            }
        };
        let Some(outcome) = with_heartbeat(app, conversation, lease, bounded).await else {
            return Ok(Outcome::LockLost);
        };
        let Some(outcome) = outcome else {
            tracing::warn!(conversation_id = %conversation, restarts, "the AI outran the deadline; handed to the re-drive");
            hand_to_redrive(app, conversation, lease, page_id, assistant).await?;
            return Ok(Outcome::Locked);
        };
        let Draft { response_id, ai_response, actions, rejected, covered_message_ids, answer_job, context_entry } =
            answer::draft(app, conversation, lease.fence, &snapshot, assistant, page_id, outcome).await;
        let redrive = Redrive {
            conversation_id: conversation.to_string(),
            page_id: page_id.map(String::from),
            assistant_id: Some(assistant.id.clone()),
            reason: "restart_budget_spent".into(),
            handed_off: false,
        };
        let delivery_enabled = app.pancake.enabled();
        let echo_texts: Vec<String> =
            if delivery_enabled { actions.iter().filter_map(Action::customer_text).collect() } else { Vec::new() };
        let send_marks: Vec<Uuid> =
            actions.iter().filter(|a| delivery::is_marked(app, a)).map(|a| a.action_id).collect();
        let record = AnswerRecord {
            context_entry: &context_entry,
            job: &serde_json::to_string(&answer_job).map_err(|_| AppError::Internal)?,
            redrive_job: &serde_json::to_string(&redrive).map_err(|_| AppError::Internal)?,
            pause_bot: answer_job.bot_paused,
            echo_texts: &echo_texts,
            send_marks: &send_marks,
        };
        // Final when the restart budget is spent, or when another round
        // would not finish before the invocation's deadline: newer messages
        // then go to the re-drive instead of a round that would be cut off.
        let is_final = restarts >= config.max_restarts || !deadline::allows(round);
        match app.store.complete(conversation, lease, snapshot.covered_seq(), is_final, &record).await? {
            Completion::Lost => return Ok(Outcome::LockLost),
            Completion::Paused => return Ok(Outcome::BotPaused),
            Completion::Newer(fuller) => {
                tracing::info!(conversation_id = %conversation, restarts, "newer messages arrived; answering again");
                snapshot = fuller;
                restarts += 1;
            }
            Completion::Done { still_owed } => {
                super::chat_log::publish_answer(app, &snapshot, &answer_job).await;
                let pancake_result =
                    delivery::deliver(app, conversation, lease.fence, response_id, page_id, &actions).await;
                let answered = Answered {
                    response_id,
                    fence: lease.fence,
                    ai_response,
                    actions,
                    rejected,
                    pancake_result,
                    covered_message_ids,
                    restarts,
                };
                return Ok(if still_owed.is_empty() {
                    Outcome::Completed(answered)
                } else {
                    Outcome::RestartNeeded { newer: still_owed, current: answered }
                });
            }
        }
    }
}

/// Gives the lock back and queues the conversation for the background
/// re-drive (the owed messages stay owed; if the enqueue fails, the sweep
/// finds them stranded: they have been owed longer than a lock TTL).
async fn hand_to_redrive(
    app: &App,
    conversation: &ConversationId,
    lease: &Lease,
    page_id: Option<&str>,
    assistant: &Assistant,
) -> Result<(), AppError> {
    let job = Redrive {
        conversation_id: conversation.to_string(),
        page_id: page_id.map(String::from),
        assistant_id: Some(assistant.id.clone()),
        reason: "deadline".into(),
        handed_off: false,
    };
    // Released first: a re-drive that ran before the release would find the
    // lock held and do nothing. Handed off when a hand-off is configured: a
    // fresh invocation answers with a whole deadline of its own.
    app.store.release(conversation, lease).await?;
    super::handoff::queue(app, conversation, jobs::REDRIVE_CONVERSATION, job).await
}

/// The thread context is the conversation's Redis context (2 h). When it holds
/// nothing but the messages being answered (expired, cleared by a `thread`
/// invalidation, or a new conversation), the history is rebuilt from Postgres
/// — a `thread` miss; otherwise a hit. A brand-new conversation (no `known`
/// mark) skips Postgres. A Postgres failure here only costs history, never
/// the answer.
async fn rebuild_thread(app: &App, conversation: &ConversationId, snapshot: &mut Snapshot) {
    let started = std::time::Instant::now();
    let has_history = snapshot.context.iter().any(|c| !snapshot.owed.iter().any(|o| o.message_id == c.message_id));
    if has_history {
        app.cache.record(CacheKind::Thread, true, started.elapsed());
        return;
    }
    if !snapshot.returning {
        // A brand-new conversation: there is no history anywhere to rebuild.
        return;
    }
    let history = async {
        let client = app.db.get().await?;
        history::load_history(
            &**client,
            conversation,
            app.config.context_max_messages,
            app.config.context_max_bytes,
            // The owed messages' entries are in the Redis snapshot already.
            &[],
        )
        .await
        .map_err(AppError::from)
    }
    .await
    .map(|entries| {
        entries
            .into_iter()
            .filter(|e| !snapshot.context.iter().any(|c| c.message_id == e.message_id))
            .collect::<Vec<_>>()
    });
    match history {
        Ok(entries) if !entries.is_empty() => {
            let _ = app.store.add_context(conversation, &entries).await;
            snapshot.context.extend(entries);
            snapshot.context.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(conversation_id = %conversation, error = %err, "thread history not rebuilt"),
    }
    app.cache.record(CacheKind::Thread, false, started.elapsed());
}

/// Runs `work` while extending the lock every third of its TTL. `None` when
/// the lock was lost (another processor owns the conversation now). A failed
/// heartbeat (Redis briefly away) does not stop the work: `complete` checks
/// the token anyway.
async fn with_heartbeat<F: Future>(
    app: &App,
    conversation: &ConversationId,
    lease: &Lease,
    work: F,
) -> Option<F::Output> {
    let interval = app.config.heartbeat_interval();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            _ = ticker.tick() => match app.store.heartbeat(conversation, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(conversation_id = %conversation, fence = lease.fence, "lock lost during processing");
                    return None;
                }
                Err(_) => {}
            },
        }
    }
}

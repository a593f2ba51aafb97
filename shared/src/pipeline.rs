//! The message pipeline: admit → process (AI, actions, complete, restarts) →
//! deliver, for one validated message (DESIGN §6).
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

use std::{future::Future, time::Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    App,
    actions::{self, Action, RejectedAction},
    ai::{self, AiRequest},
    cache::CacheKind,
    domain::{Assistant, ConversationId, IncomingMessage},
    error::AppError,
    jobs::{
        ActionJob, ActionResult, ActionResults, AiResponseView, DeliverAction, PersistAnswer, PersistMessage, Redrive,
    },
    now_epoch_seconds,
    pancake::PancakeError,
    redis::{Admission, AdmitMode, AnswerRecord, Claim, Completion, ContextEntry, Lease, OwedMessage, Snapshot},
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
    if app.store.breaker().is_open() {
        if !app.config.degraded_mode {
            return Err(AppError::Unavailable { dependency: "redis" });
        }
        // Postgres failing too is the "both down" case: say so, and the
        // 503 carries Retry-After; nothing was written (see `degraded`).
        let outcome = crate::degraded::handle(app, message).await.map_err(|err| match err {
            AppError::Unavailable { dependency: "postgres" } => {
                AppError::Unavailable { dependency: "storage (redis and postgres)" }
            }
            other => other,
        })?;
        let covered: &[String] = match &outcome {
            Outcome::Completed(answered) => &answered.covered_message_ids,
            _ => &[],
        };
        for id in covered.iter().filter_map(|id| crate::domain::MessageId::parse(id).ok()) {
            app.store.remember_degraded(&message.conversation_id, &id, true);
        }
        if !covered.iter().any(|id| id == message.message_id.as_str()) {
            app.store.remember_degraded(&message.conversation_id, &message.message_id, false);
        }
        return Ok((outcome, Backend::Postgres));
    }
    handle_in_redis(app, message).await.map(|outcome| (outcome, Backend::Redis))
}

async fn handle_in_redis(app: &App, message: &IncomingMessage) -> Result<Outcome, AppError> {
    // Back from a degraded period: Redis learns what Postgres handled
    // meanwhile before it admits anything else (a no-op otherwise).
    app.store.restore_after_outage().await;
    let job = PersistMessage::of(message);
    let job = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
    // The assistant is resolved while admit runs (one round trip instead of
    // two in a row); only a message that takes the lock uses it.
    let (assistant_id, page) = (message.assistant_id(), message.page_id());
    let (admission, assistant) = tokio::join!(
        app.store.admit(message, &job, AdmitMode::Sync),
        app.assistants.resolve(assistant_id.as_deref(), page.as_deref())
    );
    match admission? {
        Admission::Duplicate => Ok(Outcome::Duplicate),
        Admission::Stored => Ok(Outcome::Stored),
        Admission::BotPaused => Ok(Outcome::BotPaused),
        Admission::RateLimited { retry_after_secs } => Ok(Outcome::RateLimited { retry_after_secs }),
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
            let page_id = message.page_id().or_else(|| assistant.page_ids.first().cloned());
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
    let page_id = page_id.or_else(|| assistant.page_ids.first().cloned());
    process(app, conversation, &lease, snapshot, &assistant, page_id.as_deref()).await.map(Some)
}

/// Which of `owed` an answer in Postgres already covers.
async fn answered_in_postgres(
    app: &App,
    conversation: &ConversationId,
    owed: &[OwedMessage],
) -> Result<Vec<String>, AppError> {
    let ids: Vec<&str> = owed.iter().map(|m| m.message_id.as_str()).collect();
    let rows = app
        .db
        .get()
        .await?
        .query(
            "SELECT o.message_id FROM unnest($2::text[]) AS o(message_id)
              WHERE EXISTS (SELECT 1 FROM ai_responses r
                             WHERE r.conversation_id = $1 AND o.message_id = ANY(r.covered_message_ids))",
            &[&conversation.as_str(), &ids],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
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
    let mut restarts = 0;
    loop {
        let request = AiRequest {
            assistant,
            conversation_id: conversation.as_str(),
            context: &snapshot.context,
            pending: &snapshot.owed,
        };
        let Some(outcome) = with_heartbeat(app, conversation, lease, answer(app, assistant, request)).await else {
            return Ok(Outcome::LockLost);
        };
        let Draft { response_id, ai_response, actions, rejected, covered_message_ids, answer_job, context_entry } =
            draft(app, conversation, lease.fence, &snapshot, assistant, page_id, outcome).await;
        let redrive = Redrive {
            conversation_id: conversation.to_string(),
            page_id: page_id.map(String::from),
            assistant_id: Some(assistant.id.clone()),
            reason: "restart_budget_spent".into(),
        };
        let delivery_enabled = app.pancake.enabled();
        let echo_texts: Vec<String> =
            if delivery_enabled { actions.iter().filter_map(Action::customer_text).collect() } else { Vec::new() };
        let send_marks: Vec<Uuid> = if delivery_enabled {
            actions.iter().filter(|a| goes_to_pancake(app, a)).map(|a| a.action_id).collect()
        } else {
            Vec::new()
        };
        let record = AnswerRecord {
            context_entry: &context_entry,
            job: &serde_json::to_string(&answer_job).map_err(|_| AppError::Internal)?,
            redrive_job: &serde_json::to_string(&redrive).map_err(|_| AppError::Internal)?,
            pause_bot: answer_job.bot_paused,
            echo_texts: &echo_texts,
            send_marks: &send_marks,
        };
        let is_final = restarts >= config.max_restarts;
        match app.store.complete(conversation, lease, snapshot.covered_seq(), is_final, &record).await? {
            Completion::Lost => return Ok(Outcome::LockLost),
            Completion::Paused => return Ok(Outcome::BotPaused),
            Completion::Newer(fuller) => {
                tracing::info!(conversation_id = %conversation, restarts, "newer messages arrived; answering again");
                snapshot = fuller;
                restarts += 1;
            }
            Completion::Done { still_owed } => {
                let pancake_result = deliver(app, conversation, lease.fence, response_id, page_id, &actions).await;
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

/// One answer, ready to record: the AI outcome turned into validated
/// actions and the persistence job, for the lock holder of either path
/// (Redis or the degraded Postgres one).
pub(crate) struct Draft {
    pub response_id: Uuid,
    pub ai_response: AiResponseView,
    pub actions: Vec<Action>,
    pub rejected: Vec<RejectedAction>,
    pub covered_message_ids: Vec<String>,
    pub answer_job: PersistAnswer,
    pub context_entry: ContextEntry,
}

pub(crate) async fn draft(
    app: &App,
    conversation: &ConversationId,
    fence: i64,
    snapshot: &Snapshot,
    assistant: &Assistant,
    page_id: Option<&str>,
    outcome: ai::AiOutcome,
) -> Draft {
    let schema_owner;
    let validating_with = if outcome.answer.actions.iter().flatten().any(|a| a["type"] == "collect_info") {
        // The assistant's schema (cached 1 h) decides which fields may be collected.
        let mut with_schema = assistant.clone();
        if let Ok(fields) = app.assistants.schema(&assistant.id).await {
            with_schema.collect_info_fields = fields;
        }
        schema_owner = with_schema;
        &schema_owner
    } else {
        assistant
    };
    let (actions, rejected) = actions::extract(&outcome.answer, validating_with);
    let response_id = Uuid::new_v4();
    let covered_message_ids: Vec<String> = snapshot.owed.iter().map(|m| m.message_id.clone()).collect();
    let ai_response = AiResponseView {
        response_text: outcome.answer.response_text.clone(),
        intent: outcome.answer.intent.clone(),
        confidence: outcome.answer.confidence,
        entities: outcome.answer.entities.clone(),
        processing_time_ms: round_ms(outcome.processing_time_ms),
        model_used: outcome.answer.model_used.clone(),
        error: outcome.error.clone(),
        cached: outcome.cached,
    };
    let delivery_enabled = app.pancake.enabled();
    let answer_job = PersistAnswer {
        response_id,
        conversation_id: conversation.to_string(),
        fence,
        page_id: page_id.map(String::from),
        assistant_id: assistant.id.clone(),
        covered_message_ids: covered_message_ids.clone(),
        ai_response: ai_response.clone(),
        actions: actions
            .iter()
            .map(|a| ActionJob {
                action: a.clone(),
                status: if delivery_enabled { "pending" } else { "not_sent" }.into(),
                last_error: (!delivery_enabled).then(|| PancakeError::Disabled.to_string()),
            })
            .collect(),
        rejected_actions: rejected.clone(),
        bot_paused: actions.iter().any(|a| a.action_type == "transfer_to_agent"),
        created_at: now_epoch_seconds(),
    };
    let context_entry = ContextEntry {
        message_id: format!("bot:{response_id}"),
        sender_type: "bot".into(),
        content: outcome.answer.response_text.clone(),
        timestamp: answer_timestamp(snapshot),
    };
    Draft { response_id, ai_response, actions, rejected, covered_message_ids, answer_job, context_entry }
}

/// Asks the AI, answer cache first (24 h, keyed by assistant, config version
/// and a digest of the recent context; per-assistant switch). Fallback
/// answers are never cached.
pub(crate) async fn answer(app: &App, assistant: &Assistant, request: AiRequest<'_>) -> ai::AiOutcome {
    let key = assistant.answer_cache_enabled.then(|| answer_key(assistant, request.context));
    let mut stamp = None;
    if let Some(key) = &key {
        let started = std::time::Instant::now();
        match app.cache.get(CacheKind::Answer, &assistant.id, key).await {
            Ok((Some(json), _)) => {
                if let Ok(answer) = serde_json::from_str::<ai::AiAnswer>(&json) {
                    return ai::AiOutcome {
                        answer,
                        processing_time_ms: started.elapsed().as_secs_f64() * 1000.0,
                        error: None,
                        cached: true,
                    };
                }
            }
            Ok((None, s)) => stamp = Some(s),
            Err(_) => {}
        }
    }
    let outcome = ai::ask(app.ai.as_ref(), request, &app.config).await;
    if let (Some(key), Some(stamp), None) = (&key, &stamp, &outcome.error)
        && let Ok(json) = serde_json::to_string(&outcome.answer)
    {
        let _ = app.cache.put(CacheKind::Answer, &assistant.id, key, &json, stamp).await;
    }
    outcome
}

/// The answer cache key: the assistant, its configuration version and the
/// whole context, normalised (case and spacing do not matter). The whole
/// context, not its last lines: an answer that used something said earlier
/// (a name, an order) must never be served to another conversation.
fn answer_key(assistant: &Assistant, context: &[ContextEntry]) -> String {
    use sha2::{Digest, Sha256};
    let recent: Vec<(String, String)> = context
        .iter()
        .rev()
        .map(|c| {
            let normalised = c.content.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
            (if c.sender_type == "bot" { "bot" } else { "customer" }.to_owned(), normalised)
        })
        .collect();
    let digest = Sha256::digest(json!([assistant.id, assistant.config_version, recent]).to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
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
        load_history(&**client, conversation, app.config.context_max_messages).await
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

/// The conversation's latest messages and answers from Postgres (newest
/// `context_max_messages`), in no particular order.
pub(crate) async fn load_history(
    db: &impl tokio_postgres::GenericClient,
    conversation: &ConversationId,
    limit: usize,
) -> Result<Vec<ContextEntry>, AppError> {
    let rows = db
        .query(
            "SELECT message_id, sender_type, content, timestamp FROM messages WHERE conversation_id = $1
             UNION ALL
             SELECT 'bot:' || id::text, 'bot', response_text, extract(epoch FROM created_at)::float8
               FROM ai_responses WHERE conversation_id = $1
             ORDER BY 4 DESC LIMIT $2",
            &[&conversation.as_str(), &(limit as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ContextEntry { message_id: r.get(0), sender_type: r.get(1), content: r.get(2), timestamp: r.get(3) })
        .collect())
}

/// The answer sorts after everything it answered, even when the sender's
/// clock runs ahead of ours.
fn answer_timestamp(snapshot: &Snapshot) -> f64 {
    let latest = snapshot.context.iter().map(|c| c.timestamp).fold(0.0, f64::max);
    now_epoch_seconds().max(latest + 0.001)
}

fn round_ms(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
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

/// Executes the actions in order and enqueues their results. Returns seed
/// 001's `pancake_result`. With Pancake delivery disabled, messages are not
/// sent (recorded `not_sent`), while actions that do not go to Pancake
/// (`execute_api`) still run.
async fn deliver(
    app: &App,
    conversation: &ConversationId,
    fence: i64,
    response_id: Uuid,
    page_id: Option<&str>,
    actions: &[Action],
) -> Value {
    let started = Instant::now();
    let results = execute_all(app, conversation, page_id, actions).await;
    if worth_recording(app, &results) {
        let job =
            ActionResults { response_id, conversation_id: conversation.to_string(), fence, results: results.clone() };
        let sent_ids: Vec<String> = results.iter().filter_map(|r| r.pancake_message_id.clone()).collect();
        let retries: Vec<String> = actions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.status == "failed" && r.retryable)
            .filter_map(|(action, _)| {
                serde_json::to_string(&DeliverAction {
                    response_id,
                    conversation_id: conversation.to_string(),
                    page_id: page_id.map(String::from),
                    fence,
                    action: action.clone(),
                    attempt: 1,
                })
                .ok()
            })
            .collect();
        let marks: Vec<(Uuid, bool)> = actions
            .iter()
            .zip(&results)
            .filter(|(a, _)| goes_to_pancake(app, a))
            .map(|(a, r)| (a.action_id, r.status == "sent"))
            .collect();
        let enqueued = match serde_json::to_string(&job) {
            Ok(payload) => record_with_retry(app, conversation, &sent_ids, &payload, &retries, &marks).await,
            Err(_) => false,
        };
        if !enqueued {
            // The answer job already holds these actions as `pending`; the
            // consumer's sweep (idempotent by action id) settles them.
            tracing::error!(conversation_id = %conversation, %response_id, "could not enqueue action results");
        }
    }
    pancake_result(app, &results, started)
}

/// Executes the actions in order (the first attempt).
pub(crate) async fn execute_all(
    app: &App,
    conversation: &ConversationId,
    page_id: Option<&str>,
    actions: &[Action],
) -> Vec<ActionResult> {
    let mut results = Vec::with_capacity(actions.len());
    for action in actions {
        results.push(execute(app, conversation, page_id, action, 0).await);
    }
    results
}

/// Whether results are worth a row update: with delivery off and nothing
/// but recorded-only actions, the answer job already holds the final state.
pub(crate) fn worth_recording(app: &App, results: &[ActionResult]) -> bool {
    app.pancake.enabled() || results.iter().any(|r| r.status != "not_sent" && r.status != "done")
}

/// Seed 001's `pancake_result` for executed actions.
pub(crate) fn pancake_result(app: &App, results: &[ActionResult], started: Instant) -> Value {
    let executed = results.iter().filter(|r| r.status == "sent" || r.status == "done").count();
    let failed = results.iter().filter(|r| r.status == "failed").count();
    if !app.pancake.enabled() {
        return json!({
            "status": "disabled",
            "reason": "PANCAKE_BASE_URL is not set: nothing was sent to Pancake (the answer and its messages are stored as not_sent)",
            "actions_executed": executed,
            "results": results,
        });
    }
    json!({
        "status": if failed == 0 { "success" } else if executed > 0 { "partial" } else { "failed" },
        "actions_executed": executed,
        "actions_failed": failed,
        "delivery_ms": round_ms(started.elapsed().as_secs_f64() * 1000.0),
        "results": results,
    })
}

/// Records delivery results, retrying briefly in place: if this fails the
/// actions stay `pending` and the sweep will look at them, which is safe
/// (their `sent` marks are checked) but slower.
async fn record_with_retry(
    app: &App,
    conversation: &ConversationId,
    sent_ids: &[String],
    payload: &str,
    retries: &[String],
    marks: &[(Uuid, bool)],
) -> bool {
    for wait in [100u64, 400, 0] {
        if app.store.record_delivery(conversation, sent_ids, payload, retries, marks).await.is_ok() {
            return true;
        }
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
    }
    false
}

/// Whether delivering `action` calls Pancake.
fn goes_to_pancake(app: &App, action: &Action) -> bool {
    action.customer_text().is_some() || (action.action_type == "transfer_to_agent" && app.pancake.assigns())
}

/// Executes one action against Pancake (used by the lock holder and, for
/// retries, by the background consumer).
pub async fn execute(
    app: &App,
    conversation: &ConversationId,
    page_id: Option<&str>,
    action: &Action,
    attempt: u32,
) -> ActionResult {
    let mut result = ActionResult {
        action_id: action.action_id,
        action_type: action.action_type.clone(),
        status: "done".into(),
        pancake_message_id: None,
        error: None,
        retryable: false,
        attempt,
        response: None,
    };
    let needs_pancake = goes_to_pancake(app, action);
    if needs_pancake && !app.pancake.enabled() {
        result.status = "not_sent".into();
        result.error = Some(PancakeError::Disabled.to_string());
        return result;
    }
    let page_id = match page_id {
        Some(p) => p,
        None if needs_pancake => {
            result.status = "failed".into();
            result.error = Some("no page_id: set metadata.page_id or the assistant's page_ids".into());
            return result;
        }
        None => "",
    };
    let sent = if let Some(text) = action.customer_text() {
        app.pancake.send_text(page_id, conversation.as_str(), &text).await.map(|id| {
            result.status = "sent".into();
            result.pancake_message_id = id;
        })
    } else {
        match action.action_type.as_str() {
            // The bot is already paused (atomically, in `complete`).
            "transfer_to_agent" if app.pancake.assigns() => {
                app.pancake.assign(page_id, conversation.as_str()).await.map(|()| result.status = "sent".into())
            }
            "execute_api" => {
                match app.integrations.execute(&action.data).await {
                    Ok(response) => {
                        result.status = "sent".into();
                        result.response = Some(response);
                    }
                    Err(error) => {
                        result.status = "failed".into();
                        result.error = Some(error);
                    }
                }
                Ok(())
            }
            // transfer without assignment, collect_info (customer fields are
            // extracted by the consumer), end_conversation: recorded only.
            _ => Ok(()),
        }
    };
    if let Err(err) = sent {
        tracing::warn!(conversation_id = %conversation, action = %action.action_type, error = %err, "pancake delivery failed");
        result.status = "failed".into();
        result.retryable = err.is_retryable();
        result.error = Some(err.to_string());
    }
    result
}

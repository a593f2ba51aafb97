//! The answer: the AI asked behind the answer cache, then turned into a
//! [`Draft`] — validated actions, seed 001's `ai_response` and the
//! persistence job — that either path (Redis or degraded) records.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::{
    App,
    actions::{self, Action, RejectedAction},
    ai::{self, AiRequest},
    cache::CacheKind,
    clock::{now_epoch_seconds, round_ms},
    domain::{ActionStatus, Assistant, ContextEntry, ConversationId, Snapshot},
    jobs::{ActionJob, AiResponseView, PersistAnswer},
    pancake::PancakeError,
};

/// One answer, ready to record: the AI outcome turned into validated
/// actions and the persistence job, for the lock holder of either path
/// (Redis or the degraded Postgres one).
pub(super) struct Draft {
    pub response_id: Uuid,
    pub ai_response: AiResponseView,
    pub actions: Vec<Action>,
    pub rejected: Vec<RejectedAction>,
    pub covered_message_ids: Vec<String>,
    pub answer_job: PersistAnswer,
    pub context_entry: ContextEntry,
}

pub(super) async fn draft(
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
    // One time for the answer in both stores: the Redis context entry and
    // the Postgres row (`created_at`, which the history rebuilt from
    // Postgres sorts by), whenever the consumer gets to write it.
    let at = answer_timestamp(snapshot);
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
            .map(|a| {
                // An integration call runs with Pancake off too: pending until
                // its result is recorded, so the sweep settles it if the holder dies.
                let runs = delivery_enabled || a.action_type == "execute_api";
                ActionJob {
                    action: a.clone(),
                    status: if runs { ActionStatus::Pending } else { ActionStatus::NotSent },
                    last_error: (!runs).then(|| PancakeError::Disabled.to_string()),
                }
            })
            .collect(),
        rejected_actions: rejected.clone(),
        bot_paused: actions.iter().any(|a| a.action_type == "transfer_to_agent"),
        created_at: at,
    };
    let context_entry = ContextEntry {
        message_id: format!("bot:{response_id}"),
        sender_type: "bot".into(),
        content: outcome.answer.response_text.clone(),
        timestamp: at,
    };
    Draft { response_id, ai_response, actions, rejected, covered_message_ids, answer_job, context_entry }
}

/// What a round needs after its AI call, before the invocation's deadline
/// (see `crate::deadline`): delivery (its budget and the slowest call it
/// may leave in flight, `Config::delivery_time`) and a margin for the
/// store steps.
pub(super) fn delivery_tail(app: &App) -> Duration {
    app.config.delivery_time() + Duration::from_secs(2)
}

/// The least AI time a round is started with: a round that cannot give the
/// AI this much before the deadline is not started (handed to the re-drive).
const MIN_AI_BUDGET: Duration = Duration::from_secs(5);

/// The least time left for a round to start (27 s with the defaults): the
/// AI then gets what is left before the delivery tail, at most its timeout.
pub fn min_round_time(app: &App) -> Duration {
    MIN_AI_BUDGET.min(app.config.ai_timeout) + delivery_tail(app)
}

/// A whole round at worst (52 s with the defaults): an answer restarts for
/// newer messages only if this much is left; else it is final and the
/// newer messages go to the re-drive.
pub(super) fn round_time(app: &App) -> Duration {
    app.config.ai_timeout + delivery_tail(app)
}

/// How long this round's AI call may take before the deadline would cut the
/// round off (`None`: no deadline, or it leaves the AI its whole timeout).
pub(super) fn ai_budget(app: &App) -> Option<Duration> {
    let left = crate::deadline::remaining()?.saturating_sub(delivery_tail(app));
    (left < app.config.ai_timeout).then_some(left)
}

/// Asks the AI, answer cache first (24 h, keyed by assistant, config version
/// and a digest of the recent context; per-assistant switch). Fallback
/// answers are never cached.
pub(super) async fn answer(app: &App, assistant: &Assistant, request: AiRequest<'_>) -> ai::AiOutcome {
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
    let outcome = super::ai_call::ask(app, request).await;
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

/// The answer sorts after everything it answered, even when the sender's
/// clock runs ahead of ours.
fn answer_timestamp(snapshot: &Snapshot) -> f64 {
    let latest = snapshot.context.iter().map(|c| c.timestamp).fold(0.0, f64::max);
    now_epoch_seconds().max(latest + 0.001)
}

//! Delivery: an answer's actions executed in order after `complete` — texts
//! and assignments to Pancake, `execute_api` to its integration — and their
//! results enqueued with the `sent` marks that keep a retry from sending
//! twice. Also what the consumer calls to retry one action.

use std::time::Instant;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    App,
    actions::Action,
    clock::{elapsed_ms, now_epoch_seconds},
    domain::{ActionStatus, ConversationId},
    integrations::{is_safe_method, method_of},
    jobs::{self, ActionResult, ActionResults, DeliverAction},
    pancake::{Match, PancakeError},
    postgres::echoes,
    redis::MarkAfter,
};

/// Executes the actions in order and enqueues their results. Returns seed
/// 001's `pancake_result`. With Pancake delivery disabled, messages are not
/// sent (recorded `not_sent`), while actions that do not go to Pancake
/// (`execute_api`) still run. The step has one deadline
/// (`DELIVERY_BUDGET_MS`): actions not started by then are handed to the
/// consumer (a `deliver_action` each, their `sending` marks released) and
/// stay `pending` until it delivers them.
pub(super) async fn deliver(
    app: &App,
    conversation: &ConversationId,
    fence: i64,
    response_id: Uuid,
    page_id: Option<&str>,
    actions: &[Action],
) -> Value {
    let started = Instant::now();
    let answered_at = now_epoch_seconds();
    let results = execute_all(app, conversation, page_id, actions, started + app.config.delivery_budget).await;
    let handed_off = &actions[results.len()..];
    if !handed_off.is_empty() {
        tracing::warn!(conversation_id = %conversation, %response_id, actions = handed_off.len(),
            "delivery budget spent; the rest is handed to the consumer");
    }
    if worth_recording(app, &results) || !handed_off.is_empty() {
        let job =
            ActionResults { response_id, conversation_id: conversation.to_string(), fence, results: results.clone() };
        let sent_ids: Vec<String> = results.iter().filter_map(|r| r.pancake_message_id.clone()).collect();
        let retryable = actions.iter().zip(&results).filter(|(_, r)| r.status == ActionStatus::Failed && r.retryable);
        let retries: Vec<String> = retryable
            .map(|(action, _)| action)
            .chain(handed_off)
            .filter_map(|action| {
                serde_json::to_string(&DeliverAction {
                    response_id,
                    conversation_id: conversation.to_string(),
                    page_id: page_id.map(String::from),
                    fence,
                    action: action.clone(),
                    attempt: 1,
                    answered_at: Some(answered_at),
                    holder_may_have_sent: false,
                })
                .ok()
            })
            .collect();
        // Sent: marked for good; a definite failure or a hand-off: free for
        // the retry; an unknown outcome: the retry looks before it sends.
        let marks: Vec<(Uuid, MarkAfter)> = actions
            .iter()
            .zip(results.iter().map(mark_after).chain(std::iter::repeat(MarkAfter::Free)))
            .filter(|(a, _)| is_marked(app, a))
            .map(|(a, after)| (a.action_id, after))
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
    pancake_result(app, &results, handed_off.len(), started)
}

/// Executes the actions in order (the first attempt) until `deadline`: one
/// result per action started, so `actions[results.len()..]` never started.
/// No action starts after the deadline; one in flight then finishes (bounded
/// by its own timeout) rather than being cut off, since a send cut off
/// mid-flight has an unknown outcome and its retry could double it.
pub(super) async fn execute_all(
    app: &App,
    conversation: &ConversationId,
    page_id: Option<&str>,
    actions: &[Action],
    deadline: Instant,
) -> Vec<ActionResult> {
    let mut results = Vec::with_capacity(actions.len());
    for action in actions {
        if Instant::now() >= deadline {
            break;
        }
        results.push(execute(app, conversation, page_id, action, 0).await);
    }
    results
}

/// Whether results are worth a row update: with delivery off and nothing
/// but recorded-only actions, the answer job already holds the final state.
pub(super) fn worth_recording(app: &App, results: &[ActionResult]) -> bool {
    app.pancake.enabled() || results.iter().any(|r| !matches!(r.status, ActionStatus::NotSent | ActionStatus::Done))
}

/// Seed 001's `pancake_result` for executed actions, with
/// `actions_handed_off` when the budget left some to the consumer.
pub(super) fn pancake_result(app: &App, results: &[ActionResult], handed_off: usize, started: Instant) -> Value {
    let mut result = executed_result(app, results, started);
    if handed_off > 0 {
        result["actions_handed_off"] = json!(handed_off);
    }
    result
}

fn executed_result(app: &App, results: &[ActionResult], started: Instant) -> Value {
    let executed = results.iter().filter(|r| r.status.is_executed()).count();
    let failed = results.iter().filter(|r| r.status == ActionStatus::Failed).count();
    // An integration call that may or may not have run: not a success.
    let unknown = results.iter().filter(|r| r.status == ActionStatus::Unknown).count();
    if !app.pancake.enabled() {
        return json!({
            "status": "disabled",
            "reason": "PANCAKE_BASE_URL is not set: nothing was sent to Pancake (the answer and its messages are stored as not_sent)",
            "actions_executed": executed,
            "actions_unknown": unknown,
            "results": results,
        });
    }
    json!({
        "status": if failed + unknown == 0 { "success" } else if executed > 0 { "partial" } else { "failed" },
        "actions_executed": executed,
        "actions_failed": failed,
        "actions_unknown": unknown,
        "delivery_ms": elapsed_ms(started.elapsed()),
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
    marks: &[(Uuid, MarkAfter)],
) -> bool {
    let jobs: Vec<(&str, &str)> = std::iter::once((jobs::ACTION_RESULTS, payload))
        .chain(retries.iter().map(|retry| (jobs::DELIVER_ACTION, retry.as_str())))
        .collect();
    // One token for every attempt: an attempt that ran but whose reply was
    // lost makes the next one a no-op instead of a second release.
    let token = Uuid::new_v4().simple().to_string();
    for wait in [100u64, 400, 0] {
        if app.store.record_delivery(conversation, &token, sent_ids, &jobs, marks).await.is_ok() {
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

/// Whether delivering `action` has an effect outside (a Pancake call while
/// delivery is on, an integration call always): such an action is marked
/// `sending` before it runs (in `complete`, or by the consumer's
/// `send_mark`), so no retry or sweep runs it a second time.
pub(super) fn is_marked(app: &App, action: &Action) -> bool {
    (app.pancake.enabled() && goes_to_pancake(app, action)) || action.action_type == "execute_api"
}

/// What a result leaves on its action's send mark.
pub fn mark_after(result: &ActionResult) -> MarkAfter {
    match result.status {
        ActionStatus::Sent => MarkAfter::Sent,
        ActionStatus::Unknown => MarkAfter::Unknown,
        _ if result.outcome_unknown => MarkAfter::Unknown,
        _ => MarkAfter::Free,
    }
}

/// Delivers an action an earlier attempt may already have delivered (its
/// deliverer died mid-call, or the call timed out): a message is looked
/// for in the conversation first and recorded as sent if it is there; an
/// unsafe integration call is recorded `unknown` for operators, never run
/// again; a safe call or an assignment (setting the same assignees twice
/// changes nothing) simply runs. `Err`: the look-up failed, try later.
pub async fn execute_unsure(
    app: &App,
    conversation: &ConversationId,
    page_id: Option<&str>,
    action: &Action,
    attempt: u32,
    answered_at: Option<f64>,
) -> Result<ActionResult, String> {
    if let (Some(text), Some(page)) = (action.customer_text(), page_id)
        && app.pancake.enabled()
    {
        let lookup = app.pancake.find_sent(page, conversation.as_str(), &text, answered_at).await;
        let matches = lookup.map_err(|e| format!("could not look for the message in Pancake: {e}"))?;
        if let Some(found) = own_send(app, conversation, action, matches).await? {
            tracing::info!(conversation_id = %conversation, action_id = %action.action_id,
                "a send of unknown outcome had landed: recorded, not resent");
            let mut result = blank_result(action, attempt);
            result.status = ActionStatus::Sent;
            result.pancake_message_id = found.message_id;
            return Ok(result);
        }
    }
    if action.action_type == "execute_api" && !is_safe_method(&method_of(&action.data)) {
        let mut result = blank_result(action, attempt);
        result.status = ActionStatus::Unknown;
        result.error = Some("the call may have run already (its outcome is unknown): not repeated".into());
        tracing::error!(conversation_id = %conversation, action_id = %action.action_id,
            "integration call of unknown outcome: recorded for operators, not repeated");
        return Ok(result);
    }
    Ok(execute(app, conversation, page_id, action, attempt).await)
}

/// Which of the look-up's matches is this action's send: the newest one not
/// known (in Postgres) as another action's. A match without an id cannot be
/// told apart and counts as ours: never resend what may have landed.
async fn own_send(
    app: &App,
    conversation: &ConversationId,
    action: &Action,
    matches: Vec<Match>,
) -> Result<Option<Match>, String> {
    if matches.is_empty() {
        return Ok(None);
    }
    let unchecked = |e: &dyn std::fmt::Display| format!("could not check the look-up against Postgres: {e}");
    let client = app.db.get().await.map_err(|e| unchecked(&e))?;
    for found in matches {
        let Some(id) = found.message_id.as_deref() else { return Ok(Some(found)) };
        let another = echoes::sent_by_another(&**client, conversation.as_str(), id, action.action_id).await;
        if !another.map_err(|e| unchecked(&e))? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// A result with nothing happened yet (`done`, no error), to fill in.
pub fn blank_result(action: &Action, attempt: u32) -> ActionResult {
    ActionResult {
        action_id: action.action_id,
        action_type: action.action_type.clone(),
        status: ActionStatus::Done,
        pancake_message_id: None,
        error: None,
        retryable: false,
        attempt,
        response: None,
        outcome_unknown: false,
    }
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
    let mut result = blank_result(action, attempt);
    let needs_pancake = goes_to_pancake(app, action);
    if needs_pancake && !app.pancake.enabled() {
        result.status = ActionStatus::NotSent;
        result.error = Some(PancakeError::Disabled.to_string());
        return result;
    }
    let page_id = match page_id {
        Some(p) => p,
        None if needs_pancake => {
            result.status = ActionStatus::Failed;
            result.error = Some("no page_id: set metadata.page_id or the assistant's page_ids".into());
            return result;
        }
        None => "",
    };
    let sent = if let Some(text) = action.customer_text() {
        app.pancake.send_text(page_id, conversation.as_str(), &text).await.map(|id| {
            result.status = ActionStatus::Sent;
            result.pancake_message_id = id;
        })
    } else {
        match action.action_type.as_str() {
            // The bot is already paused (atomically, in `complete`).
            "transfer_to_agent" if app.pancake.assigns() => {
                app.pancake.assign(page_id, conversation.as_str()).await.map(|()| result.status = ActionStatus::Sent)
            }
            "execute_api" => {
                match app.integrations.execute(&action.data).await {
                    Ok(response) => {
                        result.status = ActionStatus::Sent;
                        result.response = Some(response);
                    }
                    // An unsafe call that may have run is never repeated:
                    // `unknown`, for operators. A safe one may be retried.
                    Err(error) if error.outcome_unknown && !is_safe_method(&method_of(&action.data)) => {
                        tracing::error!(conversation_id = %conversation, action_id = %action.action_id,
                            error = %error, "integration call of unknown outcome: recorded for operators");
                        result.status = ActionStatus::Unknown;
                        result.outcome_unknown = true;
                        result.error = Some(error.message);
                    }
                    Err(error) => {
                        result.status = ActionStatus::Failed;
                        result.retryable = error.outcome_unknown;
                        result.error = Some(error.message);
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
        result.status = ActionStatus::Failed;
        result.retryable = err.is_retryable();
        result.outcome_unknown = err.outcome_unknown();
        result.error = Some(err.to_string());
    }
    result
}

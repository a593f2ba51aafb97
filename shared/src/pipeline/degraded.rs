//! Degraded mode: the message path while Redis is unreachable (DESIGN §7).
//!
//! Entered only when the circuit breaker is open ([`crate::redis::breaker`]),
//! never because one call failed, so no message is both admitted in Redis
//! and answered here. The response has the same shape and statuses as on the
//! Redis path; what changes underneath:
//!
//! - **dedupe** is the `messages` unique key: a message already stored is a
//!   `duplicate`, unless it was stored here and no answer covers it yet (a
//!   retry after a failure half-way), which is answered now;
//! - **storage** is a direct write (the same batch writer as the consumer),
//!   marked `admitted_via = 'postgres'`, committed before anything else;
//! - **the lock** is `pg_advisory_xact_lock` on a 64-bit hash of the
//!   conversation id (waited for at most a third of the lock TTL), held by a
//!   transaction for the whole AI call. The
//!   answer is written in that same transaction, so recording it and
//!   releasing the lock are one commit, and a holder that dies (connection
//!   gone) releases it;
//! - **the fencing number** is `max(last fence + 1, clock in µs)`, the same
//!   rule the Redis scripts use, so numbers keep growing across the switch
//!   in both directions;
//! - **context** is the Postgres history; the answer cache is skipped (it
//!   lives in Redis).
//!
//! Coverage, judged by "can a message be left unanswered or answered twice":
//! every request whose message is owed *waits* for the lock (bounded by
//! `lock_timeout`), then answers everything still uncovered, its own
//! message included, or finds that an earlier holder covered it (`locked`).
//! So no message depends on another request's follow-up: one whose wait
//! times out answers `503`, and its retry finds it stored and uncovered.
//! The holder re-checks for newer uncovered messages before recording and
//! restarts with the fuller context (bounded), as on the Redis path. Only
//! messages admitted here are ever answered here.
//!
//! **Pauses** are the one pause both stores keep: Postgres' `paused_until`
//! (written with `bot_paused` by the consumer for every pausing event, and
//! here for an agent's message: its time plus the pause TTL) is honoured
//! while it is ahead, however many messages arrive meanwhile; once Redis is
//! back, [`restore_redis`] copies the pauses of the conversations handled
//! here into Redis, so a human who took over during the outage is not
//! talked over.
//!
//! Not carried over: the per-page rate window (the per-conversation one is
//! a count over `messages`), pauses set in Redis before the outage that the
//! consumer had not yet written, and Redis' delivery marks (a delivery that
//! dies mid-send is retried by the consumer's sweep, as on the Redis path).
//! Pancake's webhook uses this path too while Redis is away (see `page`).

use std::time::Instant;

use super::{
    Answered, Outcome,
    answer::{self, Draft},
    delivery,
};
use crate::{
    App,
    ai::AiRequest,
    deadline,
    domain::{Assistant, ConversationId, IncomingMessage, MessageId, SenderType, Snapshot},
    error::{AppError, RateScope},
    jobs::{ActionResults, PersistMessage},
    postgres::{
        degraded as sql, history,
        writer::{self, Batch, MessageRow},
    },
};

/// Messages older than this are never answered by a degraded holder: a
/// retry that old is a duplicate in all but name.
const OWED_HORIZON_SECS: f64 = 3_600.0;

/// Runs one validated message through the degraded path, and notes what it
/// handled for the lazy rebuild of Redis (see [`restore_redis`]).
pub async fn handle(app: &App, message: &IncomingMessage) -> Result<Outcome, AppError> {
    // Postgres failing too is the "both down" case: say so, and the 503
    // carries Retry-After; nothing was written.
    let outcome = answer_from_postgres(app, message).await.map_err(both_down)?;
    let covered: &[String] = match &outcome {
        Outcome::Completed(answered) => &answered.covered_message_ids,
        _ => &[],
    };
    for id in covered.iter().filter_map(|id| MessageId::parse(id).ok()) {
        app.store.remember_degraded(&message.conversation_id, &id, true);
    }
    // A rate-limited message is not remembered: its sender was told to
    // resend, and a dedupe mark in Redis would turn that resend into a
    // `duplicate` once Redis is back.
    let limited = matches!(outcome, Outcome::RateLimited { .. });
    if !limited && !covered.iter().any(|id| id == message.message_id.as_str()) {
        app.store.remember_degraded(&message.conversation_id, &message.message_id, false);
    }
    Ok(outcome)
}

/// Back from a degraded period (a no-op otherwise): Redis learns what
/// Postgres handled before it admits anything else, pauses included. The
/// pauses of the conversations handled here are read from Postgres (they
/// may have been set by another process, or by the consumer) and copied
/// into Redis by the store. If Postgres cannot be read now, the rest is
/// restored and the pauses are looked up again with the next message.
pub async fn restore_redis(app: &App) {
    let conversations = app.store.pauses_to_restore();
    let mut pauses = Vec::new();
    if !conversations.is_empty() {
        let ids: Vec<&str> = conversations.iter().map(ConversationId::as_str).collect();
        let read = async { Ok::<_, AppError>(sql::pauses(&**app.db.get().await?, &ids).await?) }.await;
        match read {
            Ok(rows) => {
                pauses = rows
                    .into_iter()
                    .filter_map(|(id, until_ms)| ConversationId::parse(&id).ok().map(|c| (c, until_ms)))
                    .collect()
            }
            Err(err) => tracing::warn!(error = %err, "pauses not read from postgres; retrying with the next message"),
        }
    }
    app.store.restore_after_outage(&pauses).await;
}

/// Postgres unavailable on the degraded path means both stores are down.
pub(super) fn both_down(err: AppError) -> AppError {
    match err {
        AppError::Unavailable { dependency: "postgres" } => {
            AppError::Unavailable { dependency: "storage (redis and postgres)" }
        }
        other => other,
    }
}

async fn answer_from_postgres(app: &App, message: &IncomingMessage) -> Result<Outcome, AppError> {
    // One pooled connection at a time per request: a holder waiting for a
    // second one while every connection is held by holders would stall the
    // pool (until its wait timeout) under a burst.
    if let Some(outcome) = admit(app, &mut app.db.get().await?, message).await? {
        return Ok(outcome);
    }
    let (assistant_id, page) = (message.assistant_id(), message.page_id());
    let assistant = app.assistants.resolve(assistant_id.as_deref(), page.as_deref()).await?;
    let page_id = crate::domain::delivery_page(&message.conversation_id, page, &assistant.page_ids);
    let mut client = app.db.get().await?;
    answer_owed(app, &mut client, &message.conversation_id, &assistant, page_id.as_deref()).await
}

/// Dedupe, pause, rate limit and storage. `None`: stored (or found stored
/// and uncovered) and owed an answer.
async fn admit(
    app: &App,
    client: &mut deadpool_postgres::Client,
    message: &IncomingMessage,
) -> Result<Option<Outcome>, AppError> {
    let (conversation, message_id) = (message.conversation_id.as_str(), message.message_id.as_str());
    if let Some(stored) = sql::stored_message(&***client, conversation, message_id).await? {
        let here = stored.admitted_via == "postgres" && !stored.covered;
        if here && stored.admit_outcome == "rate_limited" {
            // Limited here before (no sweep answers it while Redis is away,
            // so the sender was told to resend): admitted now if the window
            // allows, else limited again; nothing is written twice.
            let (outcome, result) = classify_customer(app, client, conversation).await?;
            if outcome == "admitted" {
                sql::readmit(&***client, conversation, message_id).await?;
            }
            return Ok(result);
        }
        let owed_here = here && stored.admit_outcome == "admitted";
        return Ok((!owed_here).then_some(Outcome::Duplicate));
    }
    let (outcome, result) = match message.sender_type {
        SenderType::Agent => ("bot_paused", Some(Outcome::BotPaused)),
        s if !s.is_customer() => ("stored", Some(Outcome::Stored)),
        _ => classify_customer(app, client, conversation).await?,
    };
    let tx = client.transaction().await?;
    let row = MessageRow { job: PersistMessage::of(message), outcome: outcome.into() };
    let written = async {
        sql::admit_via_postgres(&*tx).await?;
        writer::write_in(&*tx, &Batch { messages: vec![row], ..Batch::default() }, app.config.bot_pause_ttl).await
    }
    .await;
    match written {
        // Rolled back explicitly (see `answer_owed`): its row locks must not
        // outlive a request that is answering 503.
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err.into())
        }
        Ok(fresh) => {
            tx.commit().await?;
            app.live.publish(&fresh, None).await;
            Ok(result)
        }
    }
}

/// A customer message: paused (a human has the conversation), over the
/// conversation's rate limit, or admitted.
async fn classify_customer(
    app: &App,
    client: &deadpool_postgres::Client,
    conversation: &str,
) -> Result<(&'static str, Option<Outcome>), AppError> {
    let config = &app.config;
    let (paused, recent) =
        sql::customer_standing(&***client, conversation, config.rate_limit_window.as_secs_f64()).await?;
    if paused {
        return Ok(("bot_paused", Some(Outcome::BotPaused)));
    }
    let max = config.rate_limit_conversation_max;
    if max > 0 && recent >= i64::from(max) {
        let retry_after_secs = config.rate_limit_window.as_secs().max(1);
        return Ok(("rate_limited", Some(Outcome::RateLimited { retry_after_secs, scope: RateScope::Conversation })));
    }
    Ok(("admitted", None))
}

/// Waits for the conversation's advisory lock and answers everything owed,
/// ours included. `Locked` when an earlier holder already covered our
/// message (it answered while we waited).
async fn answer_owed(
    app: &App,
    client: &mut deadpool_postgres::Client,
    conversation: &ConversationId,
    assistant: &Assistant,
    page_id: Option<&str>,
) -> Result<Outcome, AppError> {
    let tx = client.transaction().await?;
    // Every way out ends the transaction explicitly: a dropped one only
    // queues its ROLLBACK, and a Lambda frozen right after answering would
    // keep the advisory lock (and the connection) until it thaws.
    let round = match answer_round(app, &tx, conversation, assistant, page_id).await {
        Ok(Some(round)) => round,
        Ok(None) => {
            tx.rollback().await?;
            return Ok(Outcome::Locked);
        }
        Err(err) => {
            let _ = tx.rollback().await;
            return Err(err);
        }
    };
    let (draft, fence, restarts) = round;
    let Draft { response_id, ai_response, actions, rejected, covered_message_ids, answer_job, .. } = draft;
    let batch = Batch { answers: vec![answer_job], ..Batch::default() };
    let fresh = match writer::write_in(&*tx, &batch, app.config.bot_pause_ttl).await {
        Ok(fresh) => fresh,
        Err(err) => {
            let _ = tx.rollback().await;
            return Err(err.into());
        }
    };
    tx.commit().await?;
    app.live.publish(&fresh, None).await;

    let started = Instant::now();
    // Actions the budget cuts off stay `pending`: the consumer's sweep
    // delivers them (Redis, where hand-offs go, is away).
    let deadline = started + app.config.delivery_budget;
    let results = delivery::execute_all(app, conversation, page_id, &actions, deadline).await;
    if delivery::worth_recording(app, &results) {
        let job =
            ActionResults { response_id, conversation_id: conversation.to_string(), fence, results: results.clone() };
        // On failure the actions stay `pending` and the consumer's sweep
        // settles them, as on the Redis path.
        let batch = Batch { results: vec![job], ..Batch::default() };
        if let Err(err) = writer::write(client, &batch, app.config.bot_pause_ttl).await {
            tracing::error!(conversation_id = %conversation, %response_id, error = %err, "action results not recorded");
        }
    }
    // Those cut off stay `pending`: the consumer's sweep delivers them.
    let pancake_result = delivery::pancake_result(app, &results, actions.len() - results.len(), started);
    let answered =
        Answered { response_id, fence, ai_response, actions, rejected, pancake_result, covered_message_ids, restarts };
    Ok(Outcome::Completed(answered))
}

/// Under the lock, inside `tx`: `None` when nothing is owed any more (an
/// earlier holder covered it); else the answer drafted for everything owed
/// (restarting while more arrives, bounded), with its fencing number and
/// restart count.
async fn answer_round(
    app: &App,
    tx: &deadpool_postgres::Transaction<'_>,
    conversation: &ConversationId,
    assistant: &Assistant,
    page_id: Option<&str>,
) -> Result<Option<(Draft, i64, u32)>, AppError> {
    let config = &app.config;
    // Waiting is bounded twice: for the lock (a holder's AI call may take
    // long: past a third of the lock TTL this request answers 503 and its
    // retry finds the message stored and uncovered), and for an idle holder
    // (a process stuck mid-call is cut off by Postgres, which releases the
    // lock; its message stays uncovered for the retry).
    let wait_ms = (config.lock_ttl / 3).as_millis().max(1);
    let idle_ms = (config.ai_timeout * (config.max_restarts + 1) + config.lock_ttl).as_millis();
    if !sql::lock_conversation(&**tx, conversation, wait_ms, idle_ms).await? {
        return Err(AppError::Unavailable { dependency: "the conversation (busy)" });
    }
    let mut owed = sql::uncovered(&**tx, conversation, OWED_HORIZON_SECS).await?;
    if owed.is_empty() {
        return Ok(None);
    }
    let fence = sql::next_fence(&**tx, conversation).await?;
    let mut restarts = 0;
    loop {
        let owed_ids: Vec<&str> = owed.iter().map(|m| m.message_id.as_str()).collect();
        let mut context = history::load_history(
            &**tx,
            conversation,
            config.context_max_messages,
            config.context_max_bytes,
            &owed_ids,
        )
        .await?;
        context.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        let snapshot = Snapshot { context, owed: owed.clone(), returning: true };
        let request =
            AiRequest { assistant, conversation_id: conversation.as_str(), context: &snapshot.context, pending: &owed };
        let outcome = answer::answer(app, assistant, request).await;
        let draft = answer::draft(app, conversation, fence, &snapshot, assistant, page_id, outcome).await;
        let latest = sql::uncovered(&**tx, conversation, OWED_HORIZON_SECS).await?;
        // As on the Redis path, no round starts that the deadline would cut off.
        if latest.len() > owed.len() && restarts < config.max_restarts && deadline::allows(answer::round_time(app)) {
            tracing::info!(conversation_id = %conversation, restarts, "newer messages arrived; answering again");
            owed = latest;
            restarts += 1;
            continue;
        }
        return Ok(Some((draft, fence, restarts)));
    }
}

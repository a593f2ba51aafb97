//! The reconciliation walk: the page's conversations updated in the window,
//! most recent first, and for each its messages newest first, back to the
//! window's start. Messages we already have (Redis' dedupe and echo marks,
//! Postgres' messages and sends) are skipped — not a place to stop: a
//! webhook that came back delivered the newest ones, and the gap lies
//! behind them. What is missing is admitted oldest first through the
//! webhook's path ([`page::admit`]), so a rerun, or the webhook
//! delivering the same message later, is a duplicate.
//!
//! Which messages are answered: a customer's younger than
//! `RECONCILE_ANSWER_WITHIN_SECS` that no message from the page follows
//! (owed, and a `process_conversation` job, as from the webhook); every
//! other customer message is stored `unanswered`, for the agents. A message
//! from the page is an echo of the bot (skipped, as the webhook skips it) or
//! a human's, which pauses the bot as its webhook would have.
//!
//! Bounded: Pancake's 5 calls per page per second are kept to
//! ([`CALL_INTERVAL`]), and no call starts after [`WALK_BUDGET`] (an
//! API Gateway request ends at 30 s) or too close to the invocation's
//! deadline: the report then says where to resume. A conversation is
//! admitted only once all of its missing messages were read, and a rerun of
//! a cut walk only repeats reads.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::Window;
use crate::{
    App,
    clock::now_epoch_seconds,
    config::PANCAKE_CALL_TIMEOUT,
    dates::parse_utc,
    deadline,
    domain::ConversationId,
    error::AppError,
    pancake::{ConversationSummary, MESSAGES_PER_PAGE, Pancake, PancakeError},
    pipeline::page::{self, Answer},
    postgres::known::known_message_ids,
    redis::Admission,
    webhook::{self, Event, PageMessage},
};

/// Pancake's conversation listing gives at most this many per page.
const CONVERSATIONS_PER_PAGE: usize = 60;
/// Pancake allows 5 calls per page per second.
const CALL_INTERVAL: Duration = Duration::from_millis(200);
/// No Pancake call starts later than this into the request (plus one
/// call's timeout, inside API Gateway's 30 s).
const WALK_BUDGET: Duration = Duration::from_secs(15);
/// Messages read back per conversation at most (a conversation whose
/// history is all new — a first reconciliation — is not read to its start).
const MAX_MESSAGES_PER_CONVERSATION: usize = 600;
/// Tries of a call Pancake answers `429`.
const RATE_LIMITED_TRIES: u32 = 3;

/// What one walk did (the route's response).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Listing pages read from Pancake (conversations' and messages').
    pub pages_fetched: u64,
    /// Conversations updated in the window.
    pub conversations_seen: u64,
    /// Messages we did not have yet.
    pub messages_found: u64,
    /// Messages written to Redis (and the jobs stream) by this walk.
    pub admitted: u64,
    /// Customer messages queued for the bot to answer.
    pub answered: u64,
    /// Customer messages stored without an answer, for the agents.
    pub stored_unanswered: u64,
    /// Messages from the page (a human's) stored.
    pub from_page: u64,
    /// Customer messages of a conversation the bot is paused in.
    pub bot_paused: u64,
    /// Found but admitted meanwhile (the webhook, a concurrent walk).
    pub duplicates: u64,
    /// Echoes of the bot's own sends, comments, and unreadable messages.
    pub ignored: u64,
    /// Every conversation in the window was walked.
    pub complete: bool,
    /// When not complete: rerun with this `until` to walk the rest.
    pub resume_until: Option<i64>,
}

struct Walker<'a> {
    app: &'a App,
    page_id: &'a str,
    window: Window,
    started: Instant,
    last_call: Option<Instant>,
    report: Report,
}

/// The call ran out of time before this conversation: stop, resumable.
struct OutOfTime;

pub async fn walk(app: &App, page_id: &str, window: Window) -> Result<Report, AppError> {
    let mut walker =
        Walker { app, page_id, window, started: Instant::now(), last_call: None, report: Report::default() };
    walker.report.complete = true;
    let mut after: Option<String> = None;
    // The rerun's `until` if the walk stops here: every conversation
    // updated after it was walked (one at that very second may be again).
    let mut resume_until = window.until;
    'pages: loop {
        let Ok(conversations) =
            walker.call(|p| p.conversations(page_id, window.since, window.until, after.as_deref())).await?
        else {
            walker.cut(resume_until);
            break;
        };
        let full = conversations.len() >= CONVERSATIONS_PER_PAGE;
        for conversation in &conversations {
            let updated = conversation.updated_at.map(|t| t as i64);
            if updated.is_some_and(|t| t > window.until) {
                continue;
            }
            if updated.is_some_and(|t| t < window.since) {
                // Most recently updated first: the rest is older still.
                break 'pages;
            }
            walker.report.conversations_seen += 1;
            if conversation.kind.as_deref().is_some_and(|k| k != "INBOX") {
                // The webhook answers inbox messages only (comments are a
                // different Pancake action).
                continue;
            }
            if let Some(t) = updated {
                resume_until = resume_until.min(t + 1);
            }
            if walker.conversation(conversation).await?.is_err() {
                walker.cut(resume_until);
                break 'pages;
            }
        }
        let next = conversations.last().map(|c| c.id.clone());
        if !full || next.is_none() || next == after {
            break;
        }
        after = next;
    }
    Ok(walker.report)
}

impl<'a> Walker<'a> {
    fn cut(&mut self, resume_until: i64) {
        self.report.complete = false;
        self.report.resume_until = Some(resume_until);
    }

    /// One Pancake call, paced, retried on `429`; `Err(OutOfTime)` when no
    /// call may start any more.
    async fn call<T, F, Fut>(&mut self, call: F) -> Result<Result<T, OutOfTime>, AppError>
    where
        F: Fn(&'a Pancake) -> Fut,
        Fut: std::future::Future<Output = Result<T, PancakeError>>,
    {
        let mut tries = 0;
        loop {
            if self.started.elapsed() >= WALK_BUDGET || !deadline::allows(PANCAKE_CALL_TIMEOUT + CALL_INTERVAL) {
                return Ok(Err(OutOfTime));
            }
            if let Some(last) = self.last_call {
                tokio::time::sleep_until((last + CALL_INTERVAL).into()).await;
            }
            self.last_call = Some(Instant::now());
            tries += 1;
            let app: &'a App = self.app;
            match call(&app.pancake).await {
                Ok(value) => {
                    self.report.pages_fetched += 1;
                    return Ok(Ok(value));
                }
                Err(PancakeError::Rejected { status: 429, .. }) if tries < RATE_LIMITED_TRIES => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(pancake_error(&error)),
            }
        }
    }

    /// Reads one conversation back to the window's start, then admits what is missing.
    async fn conversation(&mut self, conversation: &ConversationSummary) -> Result<Result<(), OutOfTime>, AppError> {
        let Ok(id) = ConversationId::parse(&conversation.id) else {
            self.report.ignored += 1;
            return Ok(Ok(()));
        };
        let mut missing: Vec<Value> = Vec::new();
        let mut customer = conversation.from.clone();
        let mut read = 0;
        loop {
            let (page_id, at) = (self.page_id, read);
            let Ok(page) = self.call(|p| p.messages(page_id, id.as_str(), at)).await? else {
                return Ok(Err(OutOfTime));
            };
            if !page.customer.is_null() {
                customer = page.customer;
            }
            read += page.messages.len();
            let mut done = page.messages.len() < MESSAGES_PER_PAGE || read >= MAX_MESSAGES_PER_CONVERSATION;
            let known = self.known(&id, &page.messages).await?;
            for (message, known) in page.messages.into_iter().zip(known) {
                let at = message.get("inserted_at").and_then(Value::as_str).and_then(parse_utc);
                if at.is_some_and(|t| t < self.window.since as f64) {
                    done = true;
                    break;
                }
                // Skipped, not a stop: the webhook may have delivered newer
                // messages after it came back, with the gap behind them.
                if !known {
                    missing.push(message);
                }
            }
            if done {
                break;
            }
        }
        self.report.messages_found += missing.len() as u64;
        let mut parsed: Vec<PageMessage> = Vec::with_capacity(missing.len());
        for message in missing {
            match self.parse(&id, &customer, message) {
                Some(message) => parsed.push(message),
                None => self.report.ignored += 1,
            }
        }
        // Oldest first, as they were written; the bot's own echoes out
        // (the webhook ignores them too).
        parsed.sort_by(|a, b| a.message.timestamp.total_cmp(&b.message.timestamp));
        let mut kept = Vec::with_capacity(parsed.len());
        for message in parsed {
            if message.sent_by_page && page::is_echo(self.app, &message.message).await? {
                self.report.ignored += 1;
            } else {
                kept.push(message);
            }
        }
        let answer_from = now_epoch_seconds() - self.app.config.reconcile_answer_within.as_secs_f64();
        for (i, message) in kept.iter().enumerate() {
            // A human answered it already (in Pancake, where they saw it).
            let replied = kept[i + 1..].iter().any(|later| later.sent_by_page);
            self.admit(message, message.message.timestamp >= answer_from, replied).await?;
        }
        Ok(Ok(()))
    }

    /// Per message: whether we have it already (Redis' marks, then Postgres').
    async fn known(&self, conversation: &ConversationId, messages: &[Value]) -> Result<Vec<bool>, AppError> {
        let ids: Vec<String> = messages.iter().map(|m| id_of(m.get("id")).unwrap_or_default()).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let in_redis = self.app.store.known_messages(conversation, &refs).await?;
        let in_postgres = known_message_ids(&**self.app.db.get().await?, conversation.as_str(), &ids).await?;
        Ok(ids.iter().zip(in_redis).map(|(id, redis)| redis || in_postgres.contains(id)).collect())
    }

    /// A listed message as the webhook would have delivered it, validated
    /// by the webhook's own parser; `None` for one it would not admit.
    fn parse(&self, conversation: &ConversationId, customer: &Value, message: Value) -> Option<PageMessage> {
        // The webhook reads a missing time as "now"; here that would answer
        // a message of unknown age.
        message.get("inserted_at").and_then(Value::as_str).and_then(parse_utc)?;
        let event = json!({
            "event_type": "messaging",
            "page_id": self.page_id,
            "data": {"conversation": {"id": conversation.as_str(), "from": customer}, "message": message},
        });
        let body = serde_json::to_vec(&event).ok()?;
        match webhook::parse(&body, self.app.config.max_message_bytes) {
            Ok(Event::Message(message)) => Some(*message),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(page_id = self.page_id, conversation = conversation.as_str(), %error,
                               "reconciliation skipped a message it cannot read");
                None
            }
        }
    }

    /// Admits one message: answered only if `recent` and nobody `replied`.
    async fn admit(&mut self, message: &PageMessage, recent: bool, replied: bool) -> Result<(), AppError> {
        let report = &mut self.report;
        if !message.sent_by_page && message.message_type != "INBOX" {
            report.ignored += 1;
            return Ok(());
        }
        let answer =
            if recent && (message.sent_by_page || !replied) { Answer::Yes { reason: "reconcile" } } else { Answer::No };
        let admission = page::admit(self.app, self.page_id, &message.message, answer).await?;
        if admission == Admission::Duplicate {
            report.duplicates += 1;
            return Ok(());
        }
        report.admitted += 1;
        match admission {
            _ if message.sent_by_page => report.from_page += 1,
            Admission::BotPaused => report.bot_paused += 1,
            Admission::Stored => report.stored_unanswered += 1,
            _ => report.answered += 1,
        }
        Ok(())
    }
}

/// Pancake's failure as this API's: unreachable, overloaded or timing out
/// is `503` (retry later); a refusal or an unreadable answer `502`. The
/// details are logged, never returned (the URL, with its token, is in neither).
fn pancake_error(error: &PancakeError) -> AppError {
    tracing::warn!(%error, "reconciliation: pancake call failed");
    match error {
        PancakeError::Unreachable(_) | PancakeError::Transport(_) => AppError::Unavailable { dependency: "pancake" },
        PancakeError::Rejected { status, .. } if *status == 429 || *status >= 500 => {
            AppError::Unavailable { dependency: "pancake" }
        }
        _ => AppError::BadGateway { dependency: "pancake" },
    }
}

/// Pancake's id, a string or a number.
fn id_of(id: Option<&Value>) -> Option<String> {
    match id? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

//! The conversation store: the four scripts of DESIGN §6 behind typed calls.
//!
//! Round trips on the message path: one `EVALSHA` to admit (dedupe, context,
//! state, rate limit, pause, lock, fencing number and the persistence job, all
//! atomic) and one to complete (token check, newer-message check, answer
//! recorded, lock released, answer job). Because the persistence job is
//! written inside the same script as the dedupe mark, a message can never be
//! marked seen without also being enqueued.

use std::time::Duration;

use std::sync::Arc;

use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};

use super::{
    breaker::{Breaker, BreakerConnection},
    connection::{RedisConnection, Timeouts},
    keys::{ConversationKeys, KeySpace},
    scripts,
};
use crate::{
    config::Config,
    domain::{ConversationId, IncomingMessage, MessageId, SenderType},
    error::AppError,
};

/// One message as the AI sees it, stored in the context sorted set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    pub message_id: String,
    pub sender_type: String,
    pub content: String,
    pub timestamp: f64,
}

/// A customer message that no answer covers yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwedMessage {
    pub message_id: String,
    pub timestamp: f64,
    /// Arrival order within the conversation (not part of the member).
    #[serde(skip)]
    pub seq: i64,
}

/// What the lock holder works from: the context in timestamp order and the
/// messages it must cover, in arrival order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub context: Vec<ContextEntry>,
    pub owed: Vec<OwedMessage>,
    /// The conversation existed before these messages (its history may be
    /// in Postgres); false for a brand-new conversation.
    pub returning: bool,
}

impl Snapshot {
    /// Highest arrival number the snapshot covers; `complete` clears up to it.
    pub fn covered_seq(&self) -> i64 {
        self.owed.iter().map(|m| m.seq).max().unwrap_or(0)
    }
}

/// The lock, held: its random token and the fencing number taken with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub fence: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Duplicate,
    /// A bot or system message: recorded, nothing to answer.
    Stored,
    BotPaused,
    RateLimited {
        retry_after_secs: u64,
    },
    /// Another invocation holds the conversation; this message joined its context.
    Locked,
    /// Deferred mode: owed, and a `process_conversation` job was enqueued.
    Queued,
    Acquired {
        lease: Lease,
        snapshot: Snapshot,
    },
}

/// How admit proceeds once a customer message is owed.
#[derive(Debug, Clone, Copy)]
pub enum AdmitMode<'a> {
    /// Try the lock now and answer within this request.
    Sync,
    /// Enqueue this `process_conversation` job instead (the webhook path).
    Defer { process_job: &'a str },
}

/// The outcome of claiming a conversation with no message in hand.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Nothing,
    BotPaused,
    Locked,
    Acquired { lease: Lease, snapshot: Snapshot, page_id: Option<String>, assistant_id: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The lock expired or another processor took it: the answer is discarded.
    Lost,
    /// A human took over during the AI call: the answer is discarded, the lock released.
    Paused,
    /// Newer customer messages arrived: re-run with this fuller snapshot; the lock is kept.
    Newer(Snapshot),
    /// Recorded and released; `still_owed` lists messages that arrived after
    /// the answer and are handed to the background re-drive.
    Done { still_owed: Vec<OwedMessage> },
}

/// What `complete` records with a final answer.
#[derive(Debug)]
pub struct AnswerRecord<'a> {
    pub context_entry: &'a ContextEntry,
    pub job: &'a str,
    pub redrive_job: &'a str,
    pub pause_bot: bool,
    /// Texts about to be sent to Pancake (their webhook echoes are ignored).
    pub echo_texts: &'a [String],
    /// Actions about to be delivered to Pancake, marked `sending`.
    pub send_marks: &'a [uuid::Uuid],
}

/// Whether an action may be delivered now (see `send_mark.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMark {
    AlreadySent,
    Busy,
    Go,
}

/// How long a `sending` mark holds: a delivery that died mid-send is retried after it.
const SENDING_TTL_SECS: u64 = 300;
/// How long a `sent` mark is kept.
const SENT_TTL_SECS: u64 = 7 * 24 * 3600;

#[derive(Clone)]
pub struct ConversationStore {
    conn: BreakerConnection,
    /// Messages handled by the degraded path since Redis was last reachable
    /// (see [`ConversationStore::restore_after_outage`]).
    /// (conversation, message, answered by the degraded path).
    degraded: Arc<std::sync::Mutex<Vec<(ConversationId, MessageId, bool)>>>,
    keys: KeySpace,
    lock_ttl: Duration,
    context_ttl: Duration,
    dedupe_ttl: Duration,
    pause_ttl: Duration,
    context_max: usize,
    rate_max: u32,
    page_rate_max: u32,
    rate_window: Duration,
}

impl std::fmt::Debug for ConversationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationStore").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl ConversationStore {
    /// Builds the store without connecting: the first command connects, and a
    /// lost connection is re-established in the background.
    pub fn new(config: &Config) -> Result<Self, redis::RedisError> {
        let conn = RedisConnection::open(
            config.redis_url.expose(),
            config.redis_cluster,
            Timeouts { connect: Duration::from_secs(2), response: Duration::from_secs(3) },
        )?;
        let breaker = Arc::new(Breaker::new(config.redis_breaker_failures, config.redis_breaker_cooldown));
        let conn = BreakerConnection::new(conn, breaker);
        Ok(Self {
            conn,
            degraded: Arc::default(),
            keys: KeySpace::new(&config.redis_key_prefix, &config.jobs_stream, config.redis_shards),
            lock_ttl: config.lock_ttl,
            context_ttl: config.context_ttl,
            dedupe_ttl: config.dedupe_ttl,
            pause_ttl: config.bot_pause_ttl,
            context_max: config.context_max_messages,
            rate_max: config.rate_limit_conversation_max,
            page_rate_max: config.rate_limit_page_max,
            rate_window: config.rate_limit_window,
        })
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// A clone of the shared connection, for callers with their own commands.
    pub fn connection(&self) -> BreakerConnection {
        self.conn.clone()
    }

    /// The circuit breaker every command of this process goes through.
    pub fn breaker(&self) -> &Arc<Breaker> {
        self.conn.breaker()
    }

    /// Notes a message the degraded path handled, for the lazy rebuild.
    /// `answered`: a degraded answer covers it (only those are forgotten in
    /// Redis' owed set; a message Redis admitted and the degraded path only
    /// found stored is still Redis' to answer).
    pub fn remember_degraded(&self, conversation: &ConversationId, message: &MessageId, answered: bool) {
        let mut list = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < DEGRADED_MEMORY {
            list.push((conversation.clone(), message.clone(), answered));
        }
    }

    /// The lazy rebuild after a degraded period, once Redis answers again:
    /// the messages Postgres handled get their dedupe marks (a retry of one
    /// is a `duplicate`, not a second answer) and their conversations lose
    /// their Redis context while keeping the `known` mark, so the next
    /// message rebuilds the thread from Postgres, degraded turns included;
    /// and a message Redis still owes but Postgres answered (its admit ran
    /// but the reply was lost, the retry went degraded) is forgotten, so the
    /// sweep does not answer it again. Runs once, all commands concurrently;
    /// on failure the list is kept for the next request (every step is
    /// idempotent).
    pub async fn restore_after_outage(&self) {
        let pending = std::mem::take(&mut *self.degraded.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        let mut conversations: Vec<&ConversationId> = Vec::new();
        for (conversation, _, _) in &pending {
            if !conversations.contains(&conversation) {
                conversations.push(conversation);
            }
        }
        // One pipeline and one script per conversation (each within its
        // slot), all sent at once.
        let steps = conversations.iter().map(|conversation| {
            let keys = self.keys.conversation(conversation);
            let messages: Vec<(&MessageId, bool)> =
                pending.iter().filter(|(c, _, _)| c == *conversation).map(|(_, m, answered)| (m, *answered)).collect();
            let mut pipe = redis::pipe();
            for (message, _) in &messages {
                let dedupe = self.dedupe_ttl.as_secs().max(1);
                pipe.cmd("SET").arg(keys.seen(message)).arg("1").arg("NX").arg("EX").arg(dedupe).ignore();
            }
            pipe.del(keys.context()).ignore();
            pipe.cmd("SET").arg(keys.known()).arg("1").arg("EX").arg(KNOWN_TTL_SECS).ignore();
            let answered: Vec<String> =
                messages.iter().filter(|(_, answered)| *answered).map(|(m, _)| m.as_str().to_owned()).collect();
            let mut conn = self.conn.clone();
            async move {
                let () = pipe.query_async(&mut conn).await?;
                if answered.is_empty() { Ok(()) } else { self.forget_answered(conversation, &answered).await.map(drop) }
            }
        });
        let restored = futures::future::join_all(steps).await.into_iter().collect::<Result<Vec<()>, AppError>>();
        match restored {
            Ok(_) => tracing::info!(
                messages = pending.len(),
                conversations = conversations.len(),
                "redis state restored after a degraded period"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "redis state not restored yet; retrying with the next message");
                self.degraded.lock().unwrap_or_else(|e| e.into_inner()).extend(pending);
            }
        }
    }

    /// Admits one validated message; `persist_job` is written to the stream
    /// in the same atomic step unless the message is a duplicate.
    pub async fn admit(
        &self,
        message: &IncomingMessage,
        persist_job: &str,
        mode: AdmitMode<'_>,
    ) -> Result<Admission, AppError> {
        let keys = self.keys.conversation(&message.conversation_id);
        let entry = ContextEntry {
            message_id: message.message_id.as_str().to_owned(),
            sender_type: message.sender_type.as_str().to_owned(),
            content: message.message_content.clone(),
            timestamp: message.timestamp,
        };
        let owed = OwedMessage { message_id: entry.message_id.clone(), timestamp: message.timestamp, seq: 0 };
        let kind = match message.sender_type {
            s if s.is_customer() => "customer",
            SenderType::Agent => "agent",
            _ => "other",
        };
        // The page window: inside admit on one shard (exact, no extra round
        // trip); with several shards a page's conversations live in other
        // slots, so its own window is checked first (one more round trip,
        // and a duplicate or paused message counts against the page too).
        let page = message.page_id().filter(|_| self.page_rate_max > 0);
        let page_in_script = page.is_some() && self.keys.shard_count() == 1;
        let page_verdict = match page {
            Some(page) if !page_in_script && message.sender_type.is_customer() => {
                let wait: u64 = scripts::PAGE_RATE
                    .key(self.keys.page_rate(&page))
                    .arg(now_ms())
                    .arg(millis(self.rate_window))
                    .arg(self.page_rate_max)
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                if wait > 0 { wait.to_string() } else { String::new() }
            }
            _ => String::new(),
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        let reply: Value = scripts::ADMIT
            .key(keys.seen(&message.message_id))
            .key(keys.state())
            .key(keys.context())
            .key(keys.owed())
            .key(keys.lock())
            .key(keys.shard().jobs())
            .key(keys.shard().owed_index())
            .key(keys.shard().page_rate(message.page_id().as_deref().unwrap_or("-")))
            .key(keys.known())
            .arg(message.message_id.as_str())
            .arg(message.timestamp)
            .arg(to_json(&entry))
            .arg(kind)
            .arg(persist_job)
            .arg(&token)
            .arg(millis(self.lock_ttl))
            .arg(self.context_ttl.as_secs().max(1))
            .arg(self.dedupe_ttl.as_secs().max(1))
            .arg(self.rate_max)
            .arg(millis(self.rate_window))
            .arg(now_ms())
            .arg(self.pause_ttl.as_secs().max(1))
            .arg(to_json(&owed))
            .arg(message.conversation_id.as_str())
            .arg(message.page_id().unwrap_or_default())
            .arg(message.assistant_id().unwrap_or_default())
            .arg(match mode {
                AdmitMode::Sync => "sync",
                AdmitMode::Defer { .. } => "defer",
            })
            .arg(match mode {
                AdmitMode::Sync => "",
                AdmitMode::Defer { process_job } => process_job,
            })
            .arg(if page_in_script { self.page_rate_max } else { 0 })
            .arg(KNOWN_TTL_SECS)
            .arg(page_verdict)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut parts = array(reply)?.into_iter();
        let tag = string(parts.next())?;
        Ok(match tag.as_str() {
            "duplicate" => Admission::Duplicate,
            "stored" => Admission::Stored,
            "bot_paused" => Admission::BotPaused,
            "locked" => Admission::Locked,
            "queued" => Admission::Queued,
            "rate_limited" => Admission::RateLimited {
                retry_after_secs: string(parts.next())?.parse().map_err(|_| protocol("rate_limited"))?,
            },
            "acquired" => {
                let fence = string(parts.next())?.parse().map_err(|_| protocol("fence"))?;
                let mut snapshot = snapshot(parts.next(), parts.next())?;
                snapshot.returning = string(parts.next())? == "1";
                Admission::Acquired { lease: Lease { token, fence }, snapshot }
            }
            other => return Err(protocol(other)),
        })
    }

    /// Extends the lock; `false` means it was lost and the holder must stop.
    pub async fn heartbeat(&self, conversation: &ConversationId, lease: &Lease) -> Result<bool, AppError> {
        let extended: i64 = scripts::HEARTBEAT
            .key(self.keys.conversation(conversation).lock())
            .arg(&lease.token)
            .arg(millis(self.lock_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(extended == 1)
    }

    /// The current context and owed messages (used after a debounce window).
    pub async fn snapshot(&self, conversation: &ConversationId) -> Result<Snapshot, AppError> {
        let keys = self.keys.conversation(conversation);
        let (ctx, owed): (Value, Value) = redis::pipe()
            .zrange(keys.context(), 0, -1)
            .zrange_withscores(keys.owed(), 0, -1)
            .query_async(&mut self.conn.clone())
            .await?;
        snapshot(Some(ctx), Some(owed))
    }

    /// Completes one answer. With `is_final` the answer is recorded even when
    /// newer messages arrived (the restart budget is spent).
    pub async fn complete(
        &self,
        conversation: &ConversationId,
        lease: &Lease,
        covered_seq: i64,
        is_final: bool,
        answer: &AnswerRecord<'_>,
    ) -> Result<Completion, AppError> {
        let keys: ConversationKeys = self.keys.conversation(conversation);
        let mut invocation = scripts::COMPLETE.prepare_invoke();
        invocation
            .key(keys.lock())
            .key(keys.state())
            .key(keys.context())
            .key(keys.owed())
            .key(keys.shard().jobs())
            .key(keys.shard().owed_index());
        for text in answer.echo_texts {
            invocation.key(keys.echo(text));
        }
        for action_id in answer.send_marks {
            invocation.key(keys.send_mark(action_id));
        }
        let reply: Value = invocation
            .arg(&lease.token)
            .arg(covered_seq)
            .arg(if is_final { "1" } else { "0" })
            .arg(to_json(answer.context_entry))
            .arg(answer.context_entry.timestamp)
            .arg(answer.job)
            .arg(if answer.pause_bot { "1" } else { "0" })
            .arg(self.pause_ttl.as_secs().max(1))
            .arg(self.context_ttl.as_secs().max(1))
            .arg(self.context_max)
            .arg(millis(self.lock_ttl))
            .arg(now_ms())
            .arg(answer.redrive_job)
            .arg(conversation.as_str())
            .arg(ECHO_TTL_SECS)
            .arg(answer.echo_texts.len())
            .arg(SENDING_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut parts = array(reply)?.into_iter();
        Ok(match string(parts.next())?.as_str() {
            "lost" => Completion::Lost,
            "paused" => Completion::Paused,
            "newer" => Completion::Newer(snapshot(parts.next(), parts.next())?),
            "done" => Completion::Done {
                still_owed: array(parts.next().unwrap_or(Value::Nil))?
                    .into_iter()
                    .map(|m| parse_json::<OwedMessage>(Some(m)))
                    .collect::<Result<_, _>>()?,
            },
            other => return Err(protocol(other)),
        })
    }

    /// Force-releases the lock and clears the processing flag. Returns whether
    /// a lock was held and how many messages are still owed.
    pub async fn cancel(&self, conversation: &ConversationId) -> Result<(bool, u64), AppError> {
        let keys = self.keys.conversation(conversation);
        let (released, owed): (i64, u64) = scripts::CANCEL
            .key(keys.lock())
            .key(keys.state())
            .key(keys.owed())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((released == 1, owed))
    }

    /// Takes the lock of a conversation to answer its owed messages.
    pub async fn claim(&self, conversation: &ConversationId) -> Result<Claim, AppError> {
        let keys = self.keys.conversation(conversation);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let reply: Value = scripts::CLAIM
            .key(keys.state())
            .key(keys.context())
            .key(keys.owed())
            .key(keys.lock())
            .key(keys.shard().owed_index())
            .arg(&token)
            .arg(millis(self.lock_ttl))
            .arg(now_ms())
            .arg(conversation.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut parts = array(reply)?.into_iter();
        Ok(match string(parts.next())?.as_str() {
            "nothing" => Claim::Nothing,
            "bot_paused" => Claim::BotPaused,
            "locked" => Claim::Locked,
            "acquired" => {
                let fence = string(parts.next())?.parse().map_err(|_| protocol("fence"))?;
                let snapshot = snapshot(parts.next(), parts.next())?;
                let page_id = Some(string(parts.next())?).filter(|s| !s.is_empty());
                let assistant_id = Some(string(parts.next())?).filter(|s| !s.is_empty());
                Claim::Acquired { lease: Lease { token, fence }, snapshot, page_id, assistant_id }
            }
            other => return Err(protocol(other)),
        })
    }

    /// Applies a Pancake conversation event in version order; `job` (an
    /// `update_conversation` payload) is enqueued when it applies. Returns
    /// `stale`, `paused`, `resumed` or `applied`.
    pub async fn conversation_event(
        &self,
        conversation: &ConversationId,
        version: i64,
        assigned: bool,
        job: &str,
    ) -> Result<String, AppError> {
        let keys = self.keys.conversation(conversation);
        Ok(scripts::CONVERSATION_EVENT
            .key(keys.state())
            .key(keys.shard().jobs())
            .arg(version)
            .arg(if assigned { "1" } else { "0" })
            .arg(now_ms())
            .arg(self.pause_ttl.as_secs().max(1))
            .arg(self.context_ttl.as_secs().max(1))
            .arg(job)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Whether a page-sent message is the echo of one this backend sent.
    pub async fn is_echo(
        &self,
        conversation: &ConversationId,
        pancake_message_id: &str,
        text: &str,
    ) -> Result<bool, AppError> {
        let keys = self.keys.conversation(conversation);
        let echo: i64 = scripts::ECHO
            .key(keys.sent(pancake_message_id))
            .key(keys.echo(text))
            .arg(self.dedupe_ttl.as_secs().max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(echo == 1)
    }

    /// After delivery: remember Pancake's ids of what we sent (to ignore their
    /// echoes), enqueue the delivery results and a `deliver_action` retry per
    /// retryable failure, in one round trip.
    pub async fn record_delivery(
        &self,
        conversation: &ConversationId,
        sent_ids: &[String],
        results_job: &str,
        retry_jobs: &[String],
        marks: &[(uuid::Uuid, bool)],
    ) -> Result<(), AppError> {
        let keys = self.keys.conversation(conversation);
        let mut pipe = redis::pipe();
        // Delivered actions are marked `sent` for good; failed ones unmarked
        // so a retry may send them.
        for (action_id, delivered) in marks {
            if *delivered {
                pipe.set_ex(keys.send_mark(action_id), "sent", SENT_TTL_SECS).ignore();
            } else {
                pipe.del(keys.send_mark(action_id)).ignore();
            }
        }
        for id in sent_ids {
            pipe.set_ex(keys.sent(id), 1, self.dedupe_ttl.as_secs().max(1)).ignore();
        }
        let jobs = keys.shard().jobs();
        pipe.xadd(&jobs, "*", &[("type", crate::jobs::ACTION_RESULTS), ("payload", results_job)]).ignore();
        for job in retry_jobs {
            pipe.xadd(&jobs, "*", &[("type", crate::jobs::DELIVER_ACTION), ("payload", job)]).ignore();
        }
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Drops owed entries an answer in Postgres already covers (see
    /// `forget.lua`). Returns how many were dropped.
    pub async fn forget_answered(
        &self,
        conversation: &ConversationId,
        message_ids: &[String],
    ) -> Result<i64, AppError> {
        let keys = self.keys.conversation(conversation);
        let mut forget = scripts::FORGET.key(keys.owed());
        forget.key(keys.shard().owed_index()).arg(conversation.as_str());
        for id in message_ids {
            forget.arg(id);
        }
        Ok(forget.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Gives the lock back if we still hold it.
    pub async fn release(&self, conversation: &ConversationId, lease: &Lease) -> Result<bool, AppError> {
        let keys = self.keys.conversation(conversation);
        let released: i64 = scripts::RELEASE
            .key(keys.lock())
            .key(keys.state())
            .arg(&lease.token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }

    /// Takes an action's delivery mark (consumer retries and sweeps).
    pub async fn send_mark(&self, conversation: &ConversationId, action_id: &uuid::Uuid) -> Result<SendMark, AppError> {
        let mark: String = scripts::SEND_MARK
            .key(self.keys.conversation(conversation).send_mark(action_id))
            .arg(SENDING_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match mark.as_str() {
            "sent" => SendMark::AlreadySent,
            "busy" => SendMark::Busy,
            _ => SendMark::Go,
        })
    }

    /// Conversations that have owed messages since before `older_than_ms`,
    /// oldest first, from every shard's owed index.
    pub async fn owed_conversations(&self, older_than_ms: u64, limit: usize) -> Result<Vec<String>, AppError> {
        Ok(self.owed_since(older_than_ms, limit).await?.into_iter().map(|(id, _)| id).collect())
    }

    async fn owed_since(&self, older_than_ms: u64, limit: usize) -> Result<Vec<(String, f64)>, AppError> {
        let reads = self.keys.shards().map(|shard| {
            let mut conn = self.conn.clone();
            async move {
                conn.zrangebyscore_limit_withscores::<_, _, _, Vec<(String, f64)>>(
                    shard.owed_index(),
                    "-inf",
                    older_than_ms,
                    0,
                    limit as isize,
                )
                .await
            }
        });
        let mut owed: Vec<(String, f64)> = Vec::new();
        for shard in futures::future::join_all(reads).await {
            owed.extend(shard?);
        }
        owed.sort_by(|a, b| a.1.total_cmp(&b.1));
        owed.truncate(limit);
        Ok(owed)
    }

    /// Conversations owed answers since before `older_than_ms`, with that time
    /// and whether a lock is held (a live, slow holder) or not (a dead one).
    pub async fn owed_with_locks(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, f64, bool)>, AppError> {
        let owed = self.owed_since(older_than_ms, limit).await?;
        // EXISTS over many keys: the cluster client splits it by slot.
        let checks = owed.iter().map(|(id, _)| {
            let key = ConversationId::parse(id).map(|c| self.keys.conversation(&c).lock()).unwrap_or_default();
            let mut conn = self.conn.clone();
            async move { conn.exists::<_, bool>(key).await }
        });
        let locks = futures::future::join_all(checks).await.into_iter().collect::<Result<Vec<bool>, _>>()?;
        Ok(owed.into_iter().zip(locks).map(|((id, since), locked)| (id, since, locked)).collect())
    }

    /// Per conversation: lock held, context size, owed count (admin listing).
    pub async fn conversation_states(&self, ids: &[String]) -> Result<Vec<(bool, u64, u64)>, AppError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline per conversation (one slot each), sent together.
        let reads =
            ids.iter().map(|id| {
                let keys = ConversationId::parse(id).map(|c| self.keys.conversation(&c)).ok();
                let (lock, ctx, owed) = keys.map(|k| (k.lock(), k.context(), k.owed())).unwrap_or_default();
                let mut conn = self.conn.clone();
                async move {
                    redis::pipe().exists(lock).zcard(ctx).zcard(owed).query_async::<(bool, u64, u64)>(&mut conn).await
                }
            });
        Ok(futures::future::join_all(reads).await.into_iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Bot back on: the pause and the assignment flag are cleared.
    pub async fn resume(&self, conversation: &ConversationId) -> Result<(), AppError> {
        let key = self.keys.conversation(conversation).state();
        let _: () = self.conn.clone().hset_multiple(&key, &[("paused_until_ms", "0"), ("assigned", "0")]).await?;
        let _: () = self.conn.clone().expire(&key, self.context_ttl.as_secs().max(1) as i64).await?;
        Ok(())
    }

    /// Drops the Redis state of conversations idle since before `cutoff_ms`
    /// that nobody needs (no lock, nothing owed, no pause in force); admin
    /// cleanup, Postgres is never touched. Returns (state keys scanned,
    /// conversations removed, keys removed).
    pub async fn cleanup(&self, cutoff_ms: u64) -> Result<(u64, u64, u64), AppError> {
        let pattern = format!("{}conv:{{s*}}:*:state", self.keys.prefix());
        let mut conn = self.conn.clone();
        // Every primary of a cluster is scanned (a plain SCAN sees one node).
        let states: Vec<String> = self.conn.inner().scan_keys(&pattern).await?;
        let (mut removed, mut keys_removed) = (0u64, 0u64);
        let now = now_ms();
        for state in &states {
            // The id follows the shard's hash tag: `…conv:{sN}:<id>:state`.
            let base = state.trim_end_matches(":state");
            let Some(close) = base.find("}:") else { continue };
            let Ok(conversation) = ConversationId::parse(&base[close + 2..]) else { continue };
            let keys = self.keys.conversation(&conversation);
            if keys.state() != *state {
                continue; // a key that only looks like a state key
            }
            let deleted: u64 = scripts::CLEANUP
                .key(keys.state())
                .key(keys.lock())
                .key(keys.context())
                .key(keys.owed())
                .arg(cutoff_ms)
                .arg(now)
                .invoke_async(&mut conn)
                .await?;
            if deleted > 0 {
                removed += 1;
                keys_removed += deleted;
                let _: () = conn.zrem(keys.shard().owed_index(), conversation.as_str()).await?;
            }
        }
        Ok((states.len() as u64, removed, keys_removed))
    }

    /// Adds entries rebuilt from Postgres to a conversation's context.
    pub async fn add_context(&self, conversation: &ConversationId, entries: &[ContextEntry]) -> Result<(), AppError> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.keys.conversation(conversation).context();
        let mut pipe = redis::pipe();
        for entry in entries {
            pipe.zadd(&key, to_json(entry), entry.timestamp).ignore();
        }
        pipe.expire(&key, self.context_ttl.as_secs().max(1) as i64).ignore();
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Drops a conversation's context (thread invalidation): the next answer
    /// rebuilds it from Postgres.
    pub async fn clear_context(&self, conversation: &ConversationId) -> Result<bool, AppError> {
        let removed: i64 = self.conn.clone().del(self.keys.conversation(conversation).context()).await?;
        Ok(removed == 1)
    }

    /// The job streams summed over every shard: (entries, pending in
    /// `group`, dead letters). A group not created yet counts 0 pending.
    pub async fn queue_totals(&self, group: &str) -> Result<(u64, u64, u64), AppError> {
        let reads = self.keys.shards().map(|shard| {
            let mut conn = self.conn.clone();
            async move {
                let (depth, dead): (u64, u64) =
                    redis::pipe().xlen(shard.jobs()).xlen(shard.dead_letters()).query_async(&mut conn).await?;
                let pending: Result<redis::streams::StreamPendingReply, _> = conn.xpending(shard.jobs(), group).await;
                Ok::<_, redis::RedisError>((depth, pending.map(|r| r.count() as u64).unwrap_or(0), dead))
            }
        });
        let mut totals = (0, 0, 0);
        for shard in futures::future::join_all(reads).await {
            let (depth, pending, dead) = shard?;
            totals = (totals.0 + depth, totals.1 + pending, totals.2 + dead);
        }
        Ok(totals)
    }

    /// Appends one job of a conversation to its shard's stream (jobs that
    /// need no atomic partner).
    pub async fn enqueue(&self, conversation: &ConversationId, kind: &str, payload: &str) -> Result<(), AppError> {
        let jobs = self.keys.conversation(conversation).shard().jobs();
        let _: String = self.conn.clone().xadd(jobs, "*", &[("type", kind), ("payload", payload)]).await?;
        Ok(())
    }
}

/// Messages remembered for the lazy rebuild (a degraded period longer than
/// this many messages per process rebuilds the rest's threads only when
/// their Redis context expires).
const DEGRADED_MEMORY: usize = 100_000;
/// How long a conversation counts as known after its last message.
const KNOWN_TTL_SECS: u64 = 30 * 24 * 3600;

/// How long the echo of a sent text is recognised by its digest alone.
const ECHO_TTL_SECS: u64 = 120;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(millis).unwrap_or(0)
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn protocol(what: &str) -> AppError {
    tracing::error!(reply = what, "unexpected reply from a conversation script");
    AppError::Internal
}

fn array(value: Value) -> Result<Vec<Value>, AppError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(protocol("expected an array")),
    }
}

fn string(value: Option<Value>) -> Result<String, AppError> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).map_err(|_| protocol("utf8")),
        Some(Value::SimpleString(s)) => Ok(s),
        Some(Value::Int(i)) => Ok(i.to_string()),
        _ => Err(protocol("expected a string")),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(value: Option<Value>) -> Result<T, AppError> {
    serde_json::from_str(&string(value)?).map_err(|_| protocol("json member"))
}

fn snapshot(ctx: Option<Value>, owed: Option<Value>) -> Result<Snapshot, AppError> {
    let context = array(ctx.unwrap_or(Value::Nil))?
        .into_iter()
        .map(|v| parse_json(Some(v)))
        .collect::<Result<Vec<ContextEntry>, _>>()?;
    let mut owed_items = Vec::new();
    let mut flat = array(owed.unwrap_or(Value::Nil))?.into_iter();
    // WITHSCORES replies are flat [member, score, ...] from a script and
    // may be pairs from RESP3 clients; accept both.
    while let Some(item) = flat.next() {
        let (member, score) = match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let score = pair.pop();
                (pair.pop(), score)
            }
            member => (Some(member), flat.next()),
        };
        let mut message: OwedMessage = parse_json(member)?;
        message.seq = match score {
            Some(Value::Double(d)) => d as i64,
            other => string(other)?.parse::<f64>().map_err(|_| protocol("owed score"))? as i64,
        };
        owed_items.push(message);
    }
    // Snapshots read without admit (claim, debounce, restarts) belong to
    // conversations with messages: treat them as returning.
    Ok(Snapshot { context, owed: owed_items, returning: true })
}
